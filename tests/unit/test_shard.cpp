// tools/cli/shard: --shard i/N and auto from the launchers' variables (Slurm tasks and array
// jobs, Open MPI, PMI), the precedence between them, partial and malformed environments, and
// the GPU of a process from its local rank. The variables are set in this process.
#include <doctest/doctest.h>

#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tools/cli/shard.h"

using namespace pg;
using namespace pg::cli;

namespace {

const char* kVars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK",
                       "PMI_SIZE", "MPI_LOCALRANKID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                       "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP"};

// Sets exactly these launcher variables (the others unset) for its lifetime.
struct Environment {
  explicit Environment(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const char* v : kVars) unsetenv(v);
    for (const auto& [k, v] : vars) setenv(k, v, 1);
  }
  ~Environment() {
    for (const char* v : kVars) unsetenv(v);
  }
};

std::string error_of(const std::string& spec) {
  try {
    parse_shard(spec);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("shard: --shard i/N and its refusals") {
  Environment env({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}});  // not read: the flag wins
  const Shard s = parse_shard("1/3");
  CHECK(s.index == 1);
  CHECK(s.count == 3);
  CHECK(s.active);
  CHECK(s.source == "--shard");
  CHECK(s.tag() == "1-of-3");
  CHECK(s.text() == "1/3");
  const Shard none = parse_shard("");
  CHECK(!none.active);
  CHECK(none.count == 1);
  for (const char* bad : {"3/3", "1/0", "-1/2", "1/", "/2", "a/2", "1 /2", "12", "1/2/3", "1234567890/2"})
    CHECK_MESSAGE(has(error_of(bad), "is not i/N"), bad);
  // The union of the shards is the whole set, each index once.
  std::vector<int> seen(100, 0);
  for (int i = 0; i < 7; ++i) {
    Shard k = parse_shard(std::to_string(i) + "/7");
    for (int64_t j = 0; j < 100; ++j) seen[size_t(j)] += k.owns(j) ? 1 : 0;
  }
  for (int c : seen) CHECK(c == 1);
}

TEST_CASE("shard: auto from srun, an array job, Open MPI and PMI") {
  {
    Environment env({{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "5"}, {"SLURM_LOCALID", "0"}});
    const Shard s = parse_shard("auto");
    CHECK(s.index == 2);
    CHECK(s.count == 5);
    CHECK(s.source == "SLURM_PROCID/SLURM_NTASKS");
  }
  {  // sbatch --array=0-3, one task each (the batch step's SLURM_PROCID=0/SLURM_NTASKS=1 composes)
    Environment env({{"SLURM_ARRAY_TASK_ID", "2"}, {"SLURM_ARRAY_TASK_COUNT", "4"}, {"SLURM_ARRAY_TASK_MIN", "0"},
                     {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
    const Shard s = parse_shard("auto");
    CHECK(s.index == 2);
    CHECK(s.count == 4);
  }
  {  // --array=1-8 and --array=10-40:10: the position in the array
    Environment env({{"SLURM_ARRAY_TASK_ID", "8"}, {"SLURM_ARRAY_TASK_COUNT", "8"}, {"SLURM_ARRAY_TASK_MIN", "1"}});
    CHECK(parse_shard("auto").index == 7);
  }
  {
    Environment env({{"SLURM_ARRAY_TASK_ID", "30"}, {"SLURM_ARRAY_TASK_COUNT", "4"}, {"SLURM_ARRAY_TASK_MIN", "10"},
                     {"SLURM_ARRAY_TASK_STEP", "10"}});
    const Shard s = parse_shard("auto");
    CHECK(s.index == 2);
    CHECK(s.count == 4);
  }
  {  // an array of 3 whose elements run srun --ntasks=4: 12 shards
    Environment env({{"SLURM_ARRAY_TASK_ID", "1"}, {"SLURM_ARRAY_TASK_COUNT", "3"}, {"SLURM_PROCID", "2"},
                     {"SLURM_NTASKS", "4"}});
    const Shard s = parse_shard("auto");
    CHECK(s.index == 6);
    CHECK(s.count == 12);
    CHECK(has(s.source, "SLURM_ARRAY_TASK_ID"));
  }
  {  // mpirun inside an sbatch allocation: Open MPI's rank, not the batch step's SLURM_PROCID
    Environment env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"OMPI_COMM_WORLD_RANK", "1"},
                     {"OMPI_COMM_WORLD_SIZE", "3"}});
    const Shard s = parse_shard("auto");
    CHECK(s.index == 1);
    CHECK(s.count == 3);
    CHECK(s.source == "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE");
  }
  {
    Environment env({{"PMI_RANK", "4"}, {"PMI_SIZE", "6"}, {"SLURM_PROCID", "0"}});  // a partial Slurm pair after it
    const Shard s = parse_shard("auto");
    CHECK(s.index == 4);
    CHECK(s.count == 6);
  }
}

TEST_CASE("shard: auto refuses a missing, partial or malformed environment, naming the variable") {
  {
    Environment env({});
    const std::string e = error_of("auto");
    CHECK(has(e, "no launcher's rank"));
    CHECK(has(e, "SLURM_PROCID/SLURM_NTASKS"));
    CHECK(has(e, "OMPI_COMM_WORLD_RANK"));
  }
  {
    Environment env({{"SLURM_PROCID", "1"}});
    CHECK(has(error_of("auto"), "SLURM_PROCID is set but SLURM_NTASKS is not"));
  }
  {
    Environment env({{"OMPI_COMM_WORLD_SIZE", "2"}});
    CHECK(has(error_of("auto"), "OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not"));
  }
  {
    Environment env({{"SLURM_ARRAY_TASK_ID", "1"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
    CHECK(has(error_of("auto"), "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not"));
  }
  {
    Environment env({{"SLURM_PROCID", "x1"}, {"SLURM_NTASKS", "2"}});
    CHECK(has(error_of("auto"), "SLURM_PROCID='x1' is not a non-negative integer"));
  }
  {
    Environment env({{"PMI_RANK", "2"}, {"PMI_SIZE", "2"}});
    CHECK(has(error_of("auto"), "PMI_RANK=2 is not below PMI_SIZE=2"));
  }
  {  // --array=1,5,7 (not a range)
    Environment env({{"SLURM_ARRAY_TASK_ID", "5"}, {"SLURM_ARRAY_TASK_COUNT", "3"}, {"SLURM_ARRAY_TASK_MIN", "1"}});
    CHECK(has(error_of("auto"), "SLURM_ARRAY_TASK_ID=5 is not one of the 3 array tasks"));
  }
}

TEST_CASE("shard: the GPU of a process from its local rank, modulo the visible devices") {
  {
    Environment env({});
    CHECK(local_rank_from_environment() == -1);
    CHECK(gpu_for_local_rank(-1, 4) == 0);
  }
  {
    Environment env({{"SLURM_LOCALID", "5"}, {"SLURM_PROCID", "13"}, {"SLURM_NTASKS", "16"}});
    std::string source;
    const int r = local_rank_from_environment(&source);
    CHECK(r == 5);
    CHECK(source == "SLURM_LOCALID");
    CHECK(gpu_for_local_rank(r, 4) == 1);
    CHECK(gpu_for_local_rank(r, 8) == 5);
    CHECK(gpu_for_local_rank(r, 1) == 0);  // --gpus-per-task: one visible device each
  }
  {
    Environment env({{"SLURM_LOCALID", "0"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "3"}});
    std::string source;
    CHECK(local_rank_from_environment(&source) == 3);
    CHECK(source == "OMPI_COMM_WORLD_LOCAL_RANK");
  }
  {
    Environment env({{"MPI_LOCALRANKID", "2"}});
    CHECK(local_rank_from_environment() == 2);
  }
  {
    Environment env({{"SLURM_LOCALID", "one"}});
    std::string e;
    try {
      local_rank_from_environment();
    } catch (const Error& x) {
      e = x.what();
    }
    CHECK(has(e, "SLURM_LOCALID='one' is not a non-negative integer"));
  }
}

TEST_CASE("shard: tags in file names") {
  const Shard s = parse_shard("2/4");
  CHECK(shard_file_name("out/s.safetensors", s, true) == "out/s-2-of-4.safetensors");
  CHECK(shard_file_name("out/s.safetensors", s, false) == "out/s.safetensors");
  CHECK(shard_file_name("out/s-{shard}.bin", s, false) == "out/s-2-of-4.bin");
  CHECK(shard_file_name("out.d/stats", s, true) == "out.d/stats-2-of-4");
  CHECK(shard_file_name(".hidden", s, true) == ".hidden-2-of-4");
  int i = -1, n = -1;
  CHECK(parse_shard_tag("2-of-4", &i, &n));
  CHECK(i == 2);
  CHECK(n == 4);
  CHECK(!parse_shard_tag("4-of-4", &i, &n));
  CHECK(!parse_shard_tag("2of4", &i, &n));
  CHECK(!parse_shard_tag("x-of-4", &i, &n));
}

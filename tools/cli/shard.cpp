#include "tools/cli/shard.h"

#include <cstdlib>

#include "core/error.h"

namespace pg::cli {

namespace {

// A decimal number of at most 9 digits, or -1.
long parse_count(const std::string& s) {
  if (s.empty() || s.size() > 9) return -1;
  long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// The variable's value as a non-negative number; throws naming it when it is not one.
long env_number(const char* name) {
  const char* v = env(name);
  const long n = parse_count(v);
  if (n < 0) throw Error(std::string("--shard auto: ") + name + "='" + v + "' is not a non-negative integer");
  return n;
}

struct Pair {
  const char* rank;
  const char* size;
};
constexpr Pair kTaskPairs[] = {
    {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"}, {"PMI_RANK", "PMI_SIZE"}, {"SLURM_PROCID", "SLURM_NTASKS"}};

// Both set: true with *rank, *size; neither: false; one: an error naming the other.
bool read_pair(const Pair& p, long* rank, long* size) {
  const bool r = env(p.rank) != nullptr, s = env(p.size) != nullptr;
  if (!r && !s) return false;
  if (!r || !s)
    throw Error(std::string("--shard auto: ") + (r ? p.rank : p.size) + " is set but " + (r ? p.size : p.rank) +
                " is not (a partial launcher environment); give --shard i/N");
  *rank = env_number(p.rank);
  *size = env_number(p.size);
  if (*size < 1 || *rank >= *size)
    throw Error(std::string("--shard auto: ") + p.rank + "=" + std::to_string(*rank) + " is not below " + p.size + "=" +
                std::to_string(*size));
  return true;
}

}  // namespace

std::string Shard::text() const { return std::to_string(index) + "/" + std::to_string(count); }
std::string Shard::tag() const { return std::to_string(index) + "-of-" + std::to_string(count); }

Shard shard_from_environment() {
  Shard s;
  s.active = true;
  long rank = 0, size = 1;
  std::string source;
  for (const Pair& p : kTaskPairs)
    if (read_pair(p, &rank, &size)) {
      source = std::string(p.rank) + "/" + p.size;
      break;
    }
  const bool id = env("SLURM_ARRAY_TASK_ID") != nullptr, count = env("SLURM_ARRAY_TASK_COUNT") != nullptr;
  if (id || count) {
    if (!id || !count)
      throw Error(std::string("--shard auto: ") + (id ? "SLURM_ARRAY_TASK_ID" : "SLURM_ARRAY_TASK_COUNT") +
                  " is set but " + (id ? "SLURM_ARRAY_TASK_COUNT" : "SLURM_ARRAY_TASK_ID") +
                  " is not (a partial launcher environment); give --shard i/N");
    const long task = env_number("SLURM_ARRAY_TASK_ID"), tasks = env_number("SLURM_ARRAY_TASK_COUNT");
    const long min = env("SLURM_ARRAY_TASK_MIN") ? env_number("SLURM_ARRAY_TASK_MIN") : 0;
    const long step = env("SLURM_ARRAY_TASK_STEP") ? env_number("SLURM_ARRAY_TASK_STEP") : 1;
    if (tasks < 1 || step < 1 || task < min || (task - min) % step != 0 || (task - min) / step >= tasks)
      throw Error("--shard auto: SLURM_ARRAY_TASK_ID=" + std::to_string(task) + " is not one of the " +
                  std::to_string(tasks) + " array tasks from SLURM_ARRAY_TASK_MIN=" + std::to_string(min) +
                  " in steps of " + std::to_string(step) + " (submit the array as a range, e.g. --array=0-" +
                  std::to_string(tasks - 1) + ")");
    const long position = (task - min) / step;
    if (tasks * size > 100000000L) throw Error("--shard auto: more than 10^8 shards");
    rank = position * size + rank;
    size = tasks * size;
    source = "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT" + (source.empty() ? std::string() : " x " + source);
  }
  if (source.empty())
    throw Error("--shard auto: no launcher's rank in the environment (SLURM_PROCID/SLURM_NTASKS, "
                "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE or "
                "PMI_RANK/PMI_SIZE); run under srun, sbatch --array or mpirun, or give --shard i/N");
  s.index = int(rank);
  s.count = int(size);
  s.source = source;
  return s;
}

Shard parse_shard(const std::string& spec) {
  if (spec.empty()) return Shard{};
  if (spec == "auto") return shard_from_environment();
  const size_t slash = spec.find('/');
  const long a = slash == std::string::npos ? -1 : parse_count(spec.substr(0, slash));
  const long b = slash == std::string::npos ? -1 : parse_count(spec.substr(slash + 1));
  if (a < 0 || b < 1 || a >= b) throw Error("--shard: '" + spec + "' is not i/N with 0 <= i < N, or auto");
  return Shard{int(a), int(b), true, "--shard"};
}

int local_rank_from_environment(std::string* source) {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
    const char* v = env(name);
    if (!v) continue;
    const long n = parse_count(v);
    if (n < 0) throw Error(std::string("--gpu: ") + name + "='" + v + "' is not a non-negative integer");
    if (source) *source = name;
    return int(n);
  }
  return -1;
}

int gpu_for_local_rank(int local_rank, int visible) {
  if (local_rank < 0 || visible < 1) return 0;
  return local_rank % visible;
}

std::string shard_file_name(const std::string& path, const Shard& s, bool insert) {
  const size_t at = path.find("{shard}");
  if (at != std::string::npos) return path.substr(0, at) + s.tag() + path.substr(at + 7);
  if (!insert) return path;
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  const size_t name = slash == std::string::npos ? 0 : slash + 1;  // a leading dot starts a name, not an extension
  const bool ext = dot != std::string::npos && dot > name;
  return ext ? path.substr(0, dot) + "-" + s.tag() + path.substr(dot) : path + "-" + s.tag();
}

bool parse_shard_tag(const std::string& text, int* index, int* count) {
  const size_t of = text.find("-of-");
  if (of == std::string::npos) return false;
  const long a = parse_count(text.substr(0, of)), b = parse_count(text.substr(of + 4));
  if (a < 0 || b < 1 || a >= b) return false;
  *index = int(a);
  *count = int(b);
  return true;
}

}  // namespace pg::cli

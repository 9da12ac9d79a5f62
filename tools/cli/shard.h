// Large jobs across processes: which share of the images this process takes (`--shard i/N` or
// `--shard auto`, from the launcher's environment) and which GPU it uses when `--gpu` is not
// given (its local rank on the node, modulo the visible devices). Every rule about launcher
// variables lives here; the commands only ask.
//
// The engine does not link MPI or Slurm: a process reads the variables its launcher sets.
//
// `--shard auto`, the precedence (first match wins):
//   1. the task's rank and size, from the innermost launcher that set them:
//        Open MPI  OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE
//        MPICH, Intel MPI, srun --mpi=pmi2 (PMI)  PMI_RANK / PMI_SIZE
//        Slurm     SLURM_PROCID / SLURM_NTASKS
//      MPI before Slurm: `mpirun` inside an sbatch allocation inherits the batch step's
//      SLURM_PROCID (0) and SLURM_NTASKS, which do not describe the processes mpirun starts.
//      A pair with one variable set and not the other is an error naming the missing one,
//      unless a pair before it is complete.
//   2. a Slurm array job (SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT, with
//      SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_STEP when set: --array=1-8 or 0-30:10 work)
//      composes with it: shard = array_position * size + rank, of count * size. So an array of
//      single-task jobs shards by array position, and an array whose elements run
//      `srun --ntasks=4` shards by both.
//   3. none of these: an error listing the variables.
// An explicit `--shard i/N` wins over the environment, which is then not read.
//
// A shard takes the images whose index i in the command's fixed listing order (the sorted
// ImageFolder listing, the expanded input list, the rows of a .npy batch) has i % N == shard,
// so the union of the N shards is exactly the whole set, each image once.
#pragma once
#include <cstdint>
#include <string>

namespace pg::cli {

struct Shard {
  int index = 0, count = 1;
  bool active = false;  // --shard was given: the command writes a shard's outputs
  std::string source;   // "--shard" or the variables it came from, e.g. "SLURM_PROCID/SLURM_NTASKS"

  bool owns(int64_t image_index) const { return image_index % count == index; }
  // "2/4" (progress lines, messages) and "2-of-4" (file names: results-2-of-4.jsonl).
  std::string text() const;
  std::string tag() const;
};

// "" (no sharding: 0 of 1, inactive), "i/N" with 0 <= i < N, or "auto" (the environment).
// Throws a one-line pg::Error naming --shard, or the variable that is missing or malformed.
Shard parse_shard(const std::string& spec);
Shard shard_from_environment();

// The process's rank on its node (SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID;
// Open MPI's first, then MPICH's, then Slurm's, as for the shard), or -1 when none is set.
// *source names the variable. Throws for a malformed value.
int local_rank_from_environment(std::string* source = nullptr);

// The device of a process that did not say --gpu: local_rank % visible (0 without a local rank).
int gpu_for_local_rank(int local_rank, int visible);

// A shard's output file: "{shard}" in path replaced by the tag ("stats-{shard}.bin" ->
// "stats-2-of-4.bin"); without it, when `insert`, the tag goes before the file's extension
// ("out/s.safetensors" -> "out/s-2-of-4.safetensors"), else the path stays as given.
std::string shard_file_name(const std::string& path, const Shard& s, bool insert);

// "2-of-4" parsed back (merges read it from file names); false when `text` is not of that form.
bool parse_shard_tag(const std::string& text, int* index, int* count);

}  // namespace pg::cli

// `--gpu all`: one worker thread per visible GPU inside one process, for stats, saliency,
// gradient and eval. It is in-process sharding: worker k of G runs the command's own body as
// `--shard k/G --gpu k` would (the images with index % G == k, dealt round-robin, on device
// k, with its own model), and when every worker has finished the shards are joined by the
// merges of `--shard` (stats merge, merge-results, eval merge) into exactly what one run
// writes; the shard files are then removed. gradient deals its rows the same way and puts
// them back in order itself (no files in between).
//
// A worker that fails does not stop the others; each failure is one line naming the worker's
// device, the exit status is 1 and the shard files stay, so that the same command run again
// resumes where a `--shard` run resumes (stats from its checkpoints, eval from its shard
// reports, saliency from its shard indexes and the folder's results.jsonl).
//
// `--gpu all` with `--shard` is refused: a process's workers would hold a partial merge of a
// job split across processes (a merge of merges that the merges do not check). Several nodes
// run one process per GPU instead (--shard auto; each process takes the GPU of its local rank).
#pragma once
#include <functional>
#include <string>

#include "tools/cli/device_flags.h"
#include "tools/cli/shard.h"

namespace pg::cli {

// What the body of a command runs as: worker k of G of `--gpu all` (the runner sets it in the
// copy of the options each worker is given), or the process itself.
inline bool is_gpu_worker(const DeviceFlags& d) { return d.workers > 0; }

// Worker k of G's share: the shard k/G (source "--gpu all").
Shard worker_shard(int k, int G);
// The shard a command's body takes: a worker's share, or --shard's (parse_shard).
Shard command_shard(const DeviceFlags& d, const std::string& shard_spec);

// What the merge of a finished `--gpu all` run says.
struct GpuAllMerged {
  std::string outputs;  // the summary line's "where the outputs went"
  std::string error;    // non-empty: printed after the summary ("parchgrad: error: " + error), exit status 1
};

struct GpuAllJob {
  std::string command;  // "saliency", ...: the progress label and the messages
  int threads = 0;      // --threads of the command (0: every core), shared by the workers
  // Worker k of G: runs the command's body with the options it copied and set (dev.worker = k,
  // dev.workers = G, dev.gpu = k, threads 0: the runner has set this thread's OpenMP threads).
  // Throws as the command would; an ExitCode it throws counts as a failed worker.
  std::function<void(int k, int G)> work;
  // After every worker succeeded: joins their outputs. Throws as the command would.
  std::function<GpuAllMerged(int G)> merge;
  bool summary = true;  // false: no progress and no summary line (gradient prints none)
};

// The job.work of a command whose body is run(const Options&): worker k of G runs it on a copy of
// the options with its share (dev.worker, dev.workers), its device (dev.gpu = k) and threads 0
// (the runner has set the worker thread's OpenMP threads). opts must outlive the job.
template <class Options, class Run>
std::function<void(int k, int G)> worker_body(const Options& opts, Run run) {
  return [&opts, run](int k, int G) {
    Options o = opts;
    o.dev.worker = k;
    o.dev.workers = G;
    o.dev.gpu = std::to_string(k);
    o.threads = 0;
    run(o);
  };
}

// True when the flags say --gpu all. Checks them first (throws a one-line pg::Error): --gpu
// all needs --device cuda, and does not go with --shard.
bool gpu_all_requested(const DeviceFlags& d, const std::string& shard_spec);

// Runs the job on every visible device (G = device_count(); one worker when there is one):
// one progress bar and one summary line for the whole run. Returns when all workers and the
// merge succeeded (and the merge's error is empty); otherwise prints one line per failed
// worker (or the merge's error) and throws ExitCode(1).
void run_on_all_gpus(const GpuAllJob& job);

}  // namespace pg::cli

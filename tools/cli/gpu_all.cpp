#include "tools/cli/gpu_all.h"

#include <omp.h>

#include <cstdio>
#include <exception>
#include <new>
#include <optional>
#include <algorithm>
#include <thread>
#include <vector>

#include "core/error.h"
#include "nn/backend.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/lib/progress.h"

namespace pg::cli {

Shard worker_shard(int k, int G) { return Shard{k, G, true, "--gpu all"}; }

Shard command_shard(const DeviceFlags& d, const std::string& shard_spec) {
  return is_gpu_worker(d) ? worker_shard(d.worker, d.workers) : parse_shard(shard_spec);
}

bool gpu_all_requested(const DeviceFlags& d, const std::string& shard_spec) {
  if (d.gpu != "all" || is_gpu_worker(d)) return false;
  if (d.device != "cuda") throw Error("--gpu all needs --device cuda (one worker per visible GPU)");
  if (!shard_spec.empty())
    throw Error("--gpu all does not go with --shard: across processes, run one process per GPU with --shard auto "
                "(each takes the GPU of its local rank; README: Large jobs)");
  return true;
}

void run_on_all_gpus(const GpuAllJob& job) {
  const int G = nn::device_backend().device_count();
  if (G < 1) {
    // No device to count: the device's own message (a build without a device backend, no GPU).
    nn::device_backend().configure(nn::DeviceOptions{}, 0);
    throw Error("--gpu all: no visible CUDA device");
  }
  // The cores are shared: each worker's OpenMP team gets an equal part of --threads (of every
  // core without it), at least one thread. OpenBLAS's thread count is one setting for the
  // process: set here once, before the workers start.
  const int threads = job.threads > 0 ? job.threads : omp_get_max_threads();
  const int per_worker = std::max(1, threads / G);
  set_threads(per_worker);
  std::vector<std::string> failures(static_cast<size_t>(G));
  std::optional<io::ProgressGroup> progress;  // the one bar and summary of the workers' Progress
  if (job.summary) progress.emplace(job.command + " (" + std::to_string(G) + (G == 1 ? " GPU)" : " GPUs)"));
  std::vector<std::thread> workers;
  for (int k = 0; k < G; ++k)
    workers.emplace_back([&, k]() {
      // A thread's OpenMP team size is its own setting (the main thread's does not carry over).
      omp_set_num_threads(per_worker);
      std::string& why = failures[size_t(k)];
      try {
        job.work(k, G);
      } catch (const ExitCode& e) {
        why = "failed (exit status " + std::to_string(e.code) + "; its messages are above)";
      } catch (const std::bad_alloc&) {
        why = "out of memory";
      } catch (const std::exception& e) {
        why = e.what();
        if (why.empty()) why = "failed";
      } catch (...) {
        why = "failed (an unknown exception)";
      }
    });
  for (auto& w : workers) w.join();
  set_threads(threads);  // the merge has the cores to itself
  // One line per problem: workers that failed alike (a bad input every worker read) share it.
  std::vector<std::pair<std::string, std::vector<int>>> problems;
  for (int k = 0; k < G; ++k) {
    const std::string& why = failures[size_t(k)];
    if (why.empty()) continue;
    auto same = std::find_if(problems.begin(), problems.end(), [&](const auto& p) { return p.first == why; });
    if (same == problems.end()) problems.push_back({why, {k}});
    else same->second.push_back(k);
  }
  if (!problems.empty()) {
    if (progress) progress->finish();
    // Every worker stopped alike (a missing folder, a bad option): as one run says it.
    if (problems.size() == 1 && int(problems[0].second.size()) == G) {
      std::fprintf(stderr, "parchgrad: error: %s (every worker of --gpu all)\n", problems[0].first.c_str());
      throw ExitCode(1);
    }
    int failed = 0;
    for (const auto& [why, ks] : problems) {
      std::string who = ks.size() == 1 ? "worker " : "workers ";
      std::string devices = ks.size() == 1 ? "device " : "devices ";
      for (size_t i = 0; i < ks.size(); ++i) {
        who += (i ? ", " : "") + std::to_string(ks[i]);
        devices += (i ? ", " : "") + std::to_string(ks[i]);
      }
      std::fprintf(stderr, "parchgrad: error: --gpu all: %s (%s): %s\n", who.c_str(), devices.c_str(), why.c_str());
      failed += int(ks.size());
    }
    std::fprintf(stderr,
                 "parchgrad: error: --gpu all: %d of %d workers failed; their shard files are kept, and the same "
                 "command again resumes (stats from its checkpoints, eval from its shard reports, saliency from its "
                 "shard indexes)\n",
                 failed, G);
    throw ExitCode(1);
  }
  const GpuAllMerged merged = job.merge(G);
  if (progress) progress->summary(merged.outputs);
  if (!merged.error.empty()) {
    std::fprintf(stderr, "parchgrad: error: %s\n", merged.error.c_str());
    throw ExitCode(1);
  }
}

}  // namespace pg::cli

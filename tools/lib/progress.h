// Progress of a long command on stderr: on a terminal a bar with rate and ETA redrawn in place;
// otherwise (a log, a pipe) a plain line at each tenth of the work (at most one per 5 seconds,
// none in the first 5) or after 30 seconds without one. Either way
// the command ends with one summary line (summary()): what was done, what was skipped, where
// the outputs went, the time and the rate.
//
// Several workers of one command (`--gpu all`: one thread per GPU) report into one
// ProgressGroup: while one is installed, every Progress made in the process, in any thread,
// adds its total to the group's and counts its items there, and draws nothing and prints no
// summary of its own; the group draws the one bar (or log lines) and prints the one summary.
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace pg::io {

class ProgressGroup;

class Progress {
 public:
  // label names the command ("saliency", "stats 0/4"); total counts items (images).
  Progress(std::string label, int64_t total);
  ~Progress();
  // n items done.
  void advance(int64_t n = 1);
  // n items that could not be used (an unreadable image): counted as done, and in the summary.
  void skip(int64_t n = 1);
  // n items an earlier run did (saliency's resumed inputs): counted as done and in the summary
  // ("..., 900 resumed"), not in the rate or the ETA.
  void resume(int64_t n = 1);
  // Ends the bar (on a terminal).
  void finish();
  // The command's last line, printed whether or not stderr is a terminal, e.g.
  //   "saliency: 118 images, 2 skipped, in 12.4 s (9.5 images/s); maps and results.jsonl in out/"
  // `outputs` says where the results went (may be empty).
  void summary(const std::string& outputs);

  int64_t skipped() const { return skipped_; }
  int64_t resumed() const { return resumed_; }

 private:
  friend class ProgressGroup;
  void step(int64_t n, bool computed);  // counts n done and draws (not in a group)
  void draw(bool final);
  void log_line();
  double seconds() const;
  std::string label_;
  int64_t total_, done_ = 0, skipped_ = 0, resumed_ = 0;
  bool terminal_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  // The rate (and the ETA) is measured from the first item done onwards, so a first item that
  // carries the start-up (loading, first-use conversions, warm-up) does not inflate the ETA.
  std::chrono::steady_clock::time_point first_;
  int64_t first_done_ = -1;  // items done but resumed ones, at the first item (-1: none yet)
  int64_t logged_tenths_ = 0;
  ProgressGroup* group_ = nullptr;  // the group installed when this was made: items counted there
};

// The one progress of several workers (see above). One group at a time; its constructor
// installs it for the whole process, its destructor removes it. Thread-safe: the workers'
// Progress objects report from their own threads.
class ProgressGroup {
 public:
  // label names the command, e.g. "saliency (2 GPUs)"; the total grows as workers announce theirs.
  explicit ProgressGroup(std::string label);
  ~ProgressGroup();
  ProgressGroup(const ProgressGroup&) = delete;
  ProgressGroup& operator=(const ProgressGroup&) = delete;
  // Ends the bar (on a terminal); summary() as Progress::summary, over all the workers' items.
  void finish();
  void summary(const std::string& outputs);
  int64_t done() const;
  int64_t total() const;
  int64_t skipped() const;
  int64_t resumed() const;

 private:
  friend class Progress;
  void add_total(int64_t n);
  void advance(int64_t n, bool skip, bool resume = false);
  mutable std::mutex mu_;
  Progress bar_;
};

}  // namespace pg::io

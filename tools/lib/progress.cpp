#include "tools/lib/progress.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "core/error.h"

namespace pg::io {

namespace {
using clock = std::chrono::steady_clock;

std::atomic<ProgressGroup*>& installed_group() {
  static std::atomic<ProgressGroup*> g{nullptr};
  return g;
}

std::string mmss(double secs) {
  if (!(secs >= 0) || secs > 359999) return "--:--";
  char buf[32];
  const long s = long(secs + 0.5);
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}
}  // namespace

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), terminal_(isatty(STDERR_FILENO) == 1) {
  start_ = last_draw_ = first_ = clock::now();
  group_ = installed_group().load();
  if (group_) group_->add_total(total_);
}

Progress::~Progress() { finish(); }

double Progress::seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

void Progress::skip(int64_t n) {
  if (group_) {
    skipped_ += n;
    done_ += n;
    group_->advance(n, true);
    return;
  }
  skipped_ += n;
  advance(n);
}

void Progress::advance(int64_t n) {
  if (group_) {
    done_ += n;
    group_->advance(n, false);
    return;
  }
  step(n, true);
}

void Progress::resume(int64_t n) {
  resumed_ += n;
  if (group_) {
    done_ += n;
    group_->advance(n, false, true);
    return;
  }
  step(n, false);
}

void Progress::step(int64_t n, bool computed) {
  done_ += n;
  const auto now = clock::now();
  if (computed && first_done_ < 0) {
    first_done_ = done_ - resumed_;
    first_ = now;
  }
  if (terminal_) {
    if (now - last_draw_ > std::chrono::milliseconds(100) || done_ >= total_) {
      last_draw_ = now;
      draw(false);
    }
    return;
  }
  // Not a terminal: a line at each tenth of the work, at most one per 5 s, or after 30 s without
  // one; nothing in the first 5 s, so a short job prints its summary line alone.
  const int64_t tenths = total_ > 0 ? done_ * 10 / total_ : 10;
  if (now - start_ < std::chrono::seconds(5) || done_ >= total_) return;
  if ((tenths > logged_tenths_ && now - last_draw_ > std::chrono::seconds(5)) ||
      now - last_draw_ > std::chrono::seconds(30)) {
    logged_tenths_ = tenths;
    last_draw_ = now;
    log_line();
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (terminal_ && !group_) draw(true);
}

void Progress::log_line() {
  const double since_first = std::chrono::duration<double>(clock::now() - first_).count();
  const int64_t counted = first_done_ < 0 ? 0 : done_ - resumed_ - first_done_;
  const double rate = counted > 0 && since_first > 0 ? counted / since_first : 0;
  std::fprintf(stderr, "%s: %lld/%lld (%d%%), %.1f/s, eta %s\n", label_.c_str(), (long long)done_,
               (long long)total_, total_ > 0 ? int(100 * done_ / total_) : 100, rate,
               rate > 0 ? mmss((total_ - done_) / rate).c_str() : "--:--");
  std::fflush(stderr);
}

void Progress::draw(bool final) {
  const double secs = seconds();
  const double frac = total_ > 0 ? double(done_) / double(total_) : 1.0;
  const int width = 30, filled = int(frac * width + 0.5);
  std::string bar(filled, '#');
  bar.resize(width, '.');
  const double since_first = std::chrono::duration<double>(clock::now() - first_).count();
  const int64_t counted = first_done_ < 0 ? 0 : done_ - resumed_ - first_done_;
  const double rate = final ? (secs > 0 ? (done_ - resumed_) / secs : 0) : (counted > 0 && since_first > 0 ? counted / since_first : 0);
  const std::string when = final ? mmss(secs) : rate > 0 ? mmss((total_ - done_) / rate) : "--:--";
  std::fprintf(stderr, "\r%s [%s] %lld/%lld  %.1f/s  %s %s ", label_.c_str(), bar.c_str(), (long long)done_,
               (long long)total_, rate, final ? "took" : "eta", when.c_str());
  if (final) std::fputc('\n', stderr);
  std::fflush(stderr);
}

void Progress::summary(const std::string& outputs) {
  finish();
  if (group_) return;  // the group's summary says it for all the workers
  const double secs = seconds();
  const int64_t used = done_ - skipped_ - resumed_;
  std::string line = label_ + ": " + std::to_string(used) + (used == 1 ? " image" : " images");
  if (resumed_) line += ", " + std::to_string(resumed_) + " resumed";
  if (skipped_) line += ", " + std::to_string(skipped_) + " skipped";
  char tail[96];
  std::snprintf(tail, sizeof tail, " in %.1f s (%.1f images/s)", secs, secs > 0 ? used / secs : 0.0);
  line += tail;
  if (!outputs.empty()) line += "; " + outputs;
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

// ---- ProgressGroup ----------------------------------------------------------------------------

ProgressGroup::ProgressGroup(std::string label) : bar_(std::move(label), 0) {
  bar_.group_ = nullptr;  // (made while another group may be installed: this one is refused below)
  ProgressGroup* none = nullptr;
  if (!installed_group().compare_exchange_strong(none, this))
    throw Error("internal error: a second progress group while one is installed");
}

ProgressGroup::~ProgressGroup() {
  ProgressGroup* self = this;
  installed_group().compare_exchange_strong(self, nullptr);
  finish();
}

void ProgressGroup::add_total(int64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  bar_.total_ += n;
}

void ProgressGroup::advance(int64_t n, bool skip, bool resume) {
  std::lock_guard<std::mutex> lk(mu_);
  if (skip)
    bar_.skip(n);
  else if (resume)
    bar_.resume(n);
  else
    bar_.advance(n);
}

void ProgressGroup::finish() {
  std::lock_guard<std::mutex> lk(mu_);
  bar_.finish();
}

void ProgressGroup::summary(const std::string& outputs) {
  std::lock_guard<std::mutex> lk(mu_);
  bar_.summary(outputs);
}

int64_t ProgressGroup::done() const {
  std::lock_guard<std::mutex> lk(mu_);
  return bar_.done_;
}
int64_t ProgressGroup::total() const {
  std::lock_guard<std::mutex> lk(mu_);
  return bar_.total_;
}
int64_t ProgressGroup::skipped() const {
  std::lock_guard<std::mutex> lk(mu_);
  return bar_.skipped_;
}
int64_t ProgressGroup::resumed() const {
  std::lock_guard<std::mutex> lk(mu_);
  return bar_.resumed_;
}

}  // namespace pg::io

#include "tools/lib/progress.h"

#include <unistd.h>

#include <cstdio>

namespace pg::io {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), enabled_(isatty(STDERR_FILENO) == 1) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
  done_ += n;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ > std::chrono::milliseconds(100) || done_ >= total_) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? double(done_) / double(total_) : 1.0;
  const int width = 30, filled = int(frac * width + 0.5);
  std::string bar(filled, '#');
  bar.resize(width, '.');
  const double rate = secs > 0 ? done_ / secs : 0;
  const double eta = rate > 0 ? (total_ - done_) / rate : 0;
  std::fprintf(stderr, "\r%s [%s] %lld/%lld  %.1f/s  %s %02d:%02d ", label_.c_str(), bar.c_str(),
               (long long)done_, (long long)total_, rate, final ? "took" : "eta",
               int((final ? secs : eta) / 60), int(final ? secs : eta) % 60);
  if (final) std::fputc('\n', stderr);
  std::fflush(stderr);
}

}  // namespace pg::io

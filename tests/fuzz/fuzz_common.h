// Shared by the libFuzzer targets of tests/fuzz: most readers take a path, so each input is
// written to one scratch file per process (in $TMPDIR, which the CTest runner points into the
// build tree) and the reader is called on it. A reader that refuses an input throws pg::Error
// (the documented outcome); anything else escaping a reader, a sanitizer report, a leak, a
// timeout or the memory cap is what the fuzzer reports.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "core/error.h"

namespace pg::fuzz {

class ScratchFile {
 public:
  // suffix: the file name's ending (some callers look at it; the readers here do not).
  explicit ScratchFile(const char* suffix) {
    const char* dir = std::getenv("TMPDIR");
    std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/parchgrad_fuzz_XXXXXX" + suffix;
    fd_ = ::mkstemps(tmpl.data(), static_cast<int>(std::string(suffix).size()));
    if (fd_ < 0) die("mkstemps");
    path_ = tmpl;
  }
  ~ScratchFile() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  // Replaces the file's content with the input; returns its path. Written in place and then
  // cut to length through a descriptor kept open: truncating to zero and rewriting would make
  // ext4 flush the file at every close (auto_da_alloc), a disk wait per input.
  const std::string& write(const uint8_t* data, size_t size) {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) die("writing the scratch file");
      done += static_cast<size_t>(n);
    }
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) die("truncating the scratch file");
    return path_;
  }

 private:
  [[noreturn]] static void die(const char* what) {
    std::perror((std::string("parchgrad fuzz: ") + what).c_str());
    std::abort();
  }
  std::string path_;
  int fd_ = -1;
};

// Runs a reader; pg::Error is the expected refusal of a bad input and is swallowed, after
// checking core/error.h's contract: one line, and, for a reader given `path`, "<path>: ...".
// Any other exception propagates out of LLVMFuzzerTestOneInput, which libFuzzer reports as a
// crash (an uncaught exception); a broken message contract aborts with the message. With
// PARCHGRAD_FUZZ_VERBOSE set, every refusal is printed (to see what a seed file exercises).
// check_one_line = false leaves out the one-line part (for a reader with a known exception).
template <typename F>
void expect_only_pg_errors(F&& f, const std::string& path = std::string(), bool check_one_line = true) {
  try {
    f();
  } catch (const pg::Error& e) {
    const std::string m = e.what();
    static const bool verbose = std::getenv("PARCHGRAD_FUZZ_VERBOSE") != nullptr;  // to check a corpus
    if (verbose) std::fprintf(stderr, "refused: %s\n", m.c_str());
    const bool one_line =
        !check_one_line || (m.find('\n') == std::string::npos && m.find('\r') == std::string::npos);
    const bool names_file = path.empty() || m.compare(0, path.size() + 2, path + ": ") == 0;
    if (!one_line || !names_file) {
      std::fprintf(stderr, "parchgrad fuzz: error message breaks the contract (%s): %s\n",
                   one_line ? "does not start with the path" : "more than one line", m.c_str());
      std::abort();
    }
  }
}

// What a reader accepted breaks its documented promise: abort with the reason (a finding).
[[noreturn]] inline void broken_promise(const std::string& path, const std::string& what) {
  std::fprintf(stderr, "parchgrad fuzz: %s: accepted, but %s\n", path.c_str(), what.c_str());
  std::abort();
}

// The positive control of a target (built as fuzz_<target>_control with PG_FUZZ_PLANT): a
// defect planted where the reader has read content that none of the seeds holds (the files
// of $PG_FUZZ_SEEDS, the corpus folder tests/fuzz/run.cmake names), so that the fuzzer has to
// mutate the seeds into inputs that the reader still accepts and that change what it reads
// (a tensor value, a box, a number of a record), not only bytes it skips. Its test (run.cmake
// with EXPECT_FINDING) passes only when the run reports that defect, as AddressSanitizer's
// heap-buffer-overflow, within the target's own run budget: it shows that the harness reports
// what ASan finds and that the fuzzer gets past the reader's refusals to the code behind them.
//
// new_content: whether `content`, what the reader made of this input ("" when it read
// nothing), is none of the seeds'; read(path) makes the same of a file, for the seeds (given a
// copy: some readers cut a partial last line). Always false in the real targets.
template <class Read>
bool new_content(const std::string& content, Read read) {
#ifdef PG_FUZZ_PLANT
  static const std::set<std::string> seeds = [&read] {
    std::set<std::string> out;
    const char* dir = std::getenv("PG_FUZZ_SEEDS");
    if (!dir) return out;
    ScratchFile copy(".seed");
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      std::ifstream f(e.path(), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      try {
        out.insert(read(copy.write(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
      } catch (const pg::Error&) {
      }
    }
    return out;
  }();
  return !content.empty() && !seeds.count(content);
#else
  (void)content;
  (void)read;
  return false;
#endif
}

// The planted defect, when reached (only in PG_FUZZ_PLANT builds: new_content is false else).
inline void planted_defect(bool reached) {
  if (reached) {
    volatile char* p = new char[4];
    p[4] = 1;  // one past the end
    delete[] p;
  }
}

// Exact text of numbers, for content.
inline std::string exact(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%a ", v);
  return b;
}

}  // namespace pg::fuzz

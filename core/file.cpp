#include "core/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace pg {

namespace {

std::string errno_text(int e) { return std::string("(") + std::strerror(e) + ")"; }

void check_regular(const std::string& path, const struct stat& st) {
  if (!S_ISREG(st.st_mode)) throw file_error(path, "not a regular file (" + file_kind(st.st_mode) + ")");
}

void check_size(const std::string& path, uint64_t size, uint64_t max_bytes, const std::string& what) {
  if (size > max_bytes)
    throw file_error(path, "too large for " + what + " (" + std::to_string(size) + " bytes, at most " +
                               std::to_string(max_bytes) + ")");
}

}  // namespace

std::string file_kind(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a file";
}

InputFile::InputFile(const std::string& path, uint64_t max_bytes, const std::string& what) : path_(path) {
  // Refused by its path before it is opened (opening a device can have effects of its
  // own), then checked again on the descriptor, which is what is read: the path may have
  // been replaced in between. O_NONBLOCK: opening a FIFO never waits for a writer.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw file_error(path, "cannot open " + errno_text(errno));
  check_regular(path, st);
  check_size(path, static_cast<uint64_t>(st.st_size), max_bytes, what);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) throw file_error(path, "cannot open " + errno_text(errno));
  auto fail = [&](const Error& e) {
    ::close(fd);
    return e;
  };
  if (::fstat(fd, &st) != 0) throw fail(file_error(path, "cannot open " + errno_text(errno)));
  if (!S_ISREG(st.st_mode)) throw fail(file_error(path, "not a regular file (" + file_kind(st.st_mode) + ")"));
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    throw fail(file_error(path, "too large for " + what + " (" + std::to_string(st.st_size) +
                                    " bytes, at most " + std::to_string(max_bytes) + ")"));
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  f_ = ::fdopen(fd, "rb");
  if (!f_) throw fail(file_error(path, "cannot open " + errno_text(errno)));
  size_ = static_cast<uint64_t>(st.st_size);
}

InputFile::~InputFile() {
  if (f_) std::fclose(f_);
}

InputFile::InputFile(InputFile&& other) noexcept
    : path_(std::move(other.path_)), f_(other.f_), size_(other.size_) {
  other.f_ = nullptr;
}

int InputFile::dup_fd() const {
  const int fd = ::fcntl(::fileno(f_), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) throw file_error(path_, "cannot open " + errno_text(errno));
  return fd;
}

void InputFile::read_at(uint64_t offset, void* dst, size_t n, const std::string& what) const {
  if (offset > size_ || n > size_ - offset)
    throw file_error(path_, "truncated " + what + ": needs bytes up to " + std::to_string(offset + n) +
                                ", the file has " + std::to_string(size_));
  if (n == 0) return;
  if (::fseeko(f_, static_cast<off_t>(offset), SEEK_SET) != 0)
    throw file_error(path_, "cannot read " + errno_text(errno));
  if (std::fread(dst, 1, n, f_) != n) {
    if (std::ferror(f_)) throw file_error(path_, "cannot read " + errno_text(errno));
    throw file_error(path_, "truncated " + what + " (the file shrank while it was read)");
  }
}

std::vector<uint8_t> read_file_limited(const std::string& path, uint64_t max_bytes, const std::string& what) {
  InputFile f(path, max_bytes, what);
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(f.size()));
  uint8_t buf[1 << 16];
  for (;;) {
    const size_t got = std::fread(buf, 1, sizeof buf, f.get());
    if (out.size() + got > max_bytes) check_size(path, out.size() + got, max_bytes, what);
    out.insert(out.end(), buf, buf + got);
    if (got < sizeof buf) break;
  }
  if (std::ferror(f.get())) throw file_error(path, "cannot read " + errno_text(errno));
  return out;
}

std::string read_file_head(const std::string& path, size_t n, uint64_t max_bytes, const std::string& what) {
  InputFile f(path, max_bytes, what);
  std::string head(n, '\0');
  const size_t got = n ? std::fread(head.data(), 1, n, f.get()) : 0;
  if (std::ferror(f.get())) throw file_error(path, "cannot read " + errno_text(errno));
  head.resize(got);
  return head;
}

}  // namespace pg

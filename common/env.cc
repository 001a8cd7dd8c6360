#include "common/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace quantserve::common {
namespace {

// Alignment of in-memory file contents, so MemEnv hands out pointers as aligned as any
// element type a tensor may have (mmap gives a page).
constexpr std::align_val_t kMemAlignment{64};

// A stable, non-null address for empty regions.
alignas(64) const uint8_t kEmptyBytes[1] = {0};

absl::Status ErrnoError(int error_number, absl::string_view op, const std::string& path) {
  // A path through a non-directory ("a/file/x") is as missing as one that does not exist.
  absl::StatusCode code =
      error_number == ENOTDIR ? absl::StatusCode::kNotFound : absl::ErrnoToStatusCode(error_number);
  return absl::Status(
      code, absl::StrCat(op, " \"", path, "\": ", std::generic_category().message(error_number)));
}

absl::Status CheckPath(const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError("empty path");
  }
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("path contains a NUL byte: \"", path.c_str(), "...\""));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// POSIX

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

class MmapRegion final : public ReadOnlyRegion {
 public:
  MmapRegion(void* base, size_t size) : base_(base), size_(size) {}
  ~MmapRegion() override {
    if (size_ > 0) {
      ::munmap(base_, size_);
    }
  }
  const uint8_t* data() const override {
    return size_ > 0 ? static_cast<const uint8_t*>(base_) : kEmptyBytes;
  }
  size_t size() const override { return size_; }
  void DropPages(size_t offset, size_t length) const override {
    // Only whole pages inside the range; MADV_DONTNEED on a private read-only file mapping
    // just drops clean pages, which are re-read from the file if touched again.
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    if (offset > size_ || length > size_ - offset) return;
    const size_t begin = (offset + page - 1) / page * page;
    const size_t end = (offset + length) / page * page;
    if (end > begin) {
      ::madvise(static_cast<char*>(base_) + begin, end - begin, MADV_DONTNEED);
    }
  }

 private:
  void* base_;
  size_t size_;
};

// Opens `path` read-only and checks it is a regular file; fills `st`.
absl::StatusOr<int> OpenRegularFile(const std::string& path, struct stat* st) {
  if (absl::Status s = CheckPath(path); !s.ok()) {
    return s;
  }
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    return ErrnoError(errno, "open", path);
  }
  if (::fstat(fd, st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, "fstat", path);
  }
  if (!S_ISREG(st->st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "open \"", path, "\": ", S_ISDIR(st->st_mode) ? "is a directory" : "not a regular file"));
  }
  return fd;
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  ~PosixWritableFile() override { (void)Close(); }

  absl::Status Append(std::string_view data) override {
    if (file_ == nullptr) return absl::FailedPreconditionError("append to a closed file");
    if (!data.empty() && std::fwrite(data.data(), 1, data.size(), file_) != data.size()) {
      return ErrnoError(errno, "write", path_);
    }
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    if (file_ == nullptr) return absl::FailedPreconditionError("sync of a closed file");
    if (std::fflush(file_) != 0) return ErrnoError(errno, "write", path_);
    if (::fsync(::fileno(file_)) != 0) return ErrnoError(errno, "fsync", path_);
    return absl::OkStatus();
  }
  absl::Status Close() override {
    if (file_ == nullptr) return absl::OkStatus();
    const int rc = std::fclose(file_);
    file_ = nullptr;
    return rc == 0 ? absl::OkStatus() : ErrnoError(errno, "close", path_);
  }

 private:
  const std::string path_;
  std::FILE* file_;
};

class PosixEnv final : public Env {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    if (absl::Status s = CheckPath(path); !s.ok()) return s;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return ErrnoError(errno, "create", path);
    return std::make_unique<PosixWritableFile>(path, f);
  }

  absl::Status CreateDirs(const std::string& path) override {
    if (absl::Status s = CheckPath(path); !s.ok()) return s;
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return ErrnoError(ec.value(), "mkdir", path);
    return absl::OkStatus();
  }

  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    if (absl::Status s = CheckPath(from); !s.ok()) return s;
    if (absl::Status s = CheckPath(to); !s.ok()) return s;
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoError(errno, "rename", absl::StrCat(from, "\" to \"", to));
    }
    return absl::OkStatus();
  }

  absl::Status RemoveAll(const std::string& path) override {
    if (absl::Status s = CheckPath(path); !s.ok()) return s;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) return ErrnoError(ec.value(), "remove", path);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> NewReadOnlyRegion(
      const std::string& path) override {
    struct stat st;
    absl::StatusOr<int> fd_or = OpenRegularFile(path, &st);
    if (!fd_or.ok()) {
      return fd_or.status();
    }
    ScopedFd fd(*fd_or);
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size == 0) {
      // mmap rejects length 0; an empty region needs no mapping.
      return std::make_unique<MmapRegion>(nullptr, 0);
    }
    if (size > static_cast<uint64_t>(SIZE_MAX)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("mmap \"", path, "\": file of ", size, " bytes exceeds address space"));
    }
    void* base = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (base == MAP_FAILED) {
      return ErrnoError(errno, "mmap", path);
    }
    return std::make_unique<MmapRegion>(base, static_cast<size_t>(size));
  }

  absl::StatusOr<std::string> ReadFileToString(const std::string& path) override {
    struct stat st;
    absl::StatusOr<int> fd_or = OpenRegularFile(path, &st);
    if (!fd_or.ok()) {
      return fd_or.status();
    }
    ScopedFd fd(*fd_or);
    std::string out;
    out.reserve(static_cast<size_t>(st.st_size));
    char buf[1 << 16];
    while (true) {
      ssize_t n = ::read(fd.get(), buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return ErrnoError(errno, "read", path);
      }
      if (n == 0) {
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  bool FileExists(const std::string& path) override {
    struct stat st;
    return CheckPath(path).ok() && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  }

  bool IsDirectory(const std::string& path) override {
    struct stat st;
    return CheckPath(path).ok() && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    if (absl::Status s = CheckPath(path); !s.ok()) {
      return s;
    }
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return ErrnoError(errno, "stat", path);
    }
    if (S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat("stat \"", path, "\": is a directory"));
    }
    return static_cast<uint64_t>(st.st_size);
  }

  absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path) override {
    if (absl::Status s = CheckPath(path); !s.ok()) {
      return s;
    }
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) {
      return ErrnoError(errno, "opendir", path);
    }
    std::vector<std::string> names;
    while (true) {
      errno = 0;
      struct dirent* entry = ::readdir(dir);
      if (entry == nullptr) {
        int err = errno;
        ::closedir(dir);
        if (err != 0) {
          return ErrnoError(err, "readdir", path);
        }
        break;
      }
      std::string_view name(entry->d_name);
      if (name != "." && name != "..") {
        names.emplace_back(name);
      }
    }
    std::sort(names.begin(), names.end());
    return names;
  }
};

// ---------------------------------------------------------------------------------------
// In memory

// File contents in an aligned heap block, shared between the MemEnv and its regions.
class MemFile {
 public:
  explicit MemFile(std::string_view bytes)
      : size_(bytes.size()),
        data_(static_cast<uint8_t*>(::operator new(std::max<size_t>(size_, 1), kMemAlignment))) {
    if (size_ > 0) {
      std::memcpy(data_, bytes.data(), size_);
    }
  }
  ~MemFile() { ::operator delete(data_, kMemAlignment); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  size_t size_;
  uint8_t* data_;
};

class MemRegion final : public ReadOnlyRegion {
 public:
  explicit MemRegion(std::shared_ptr<const MemFile> file) : file_(std::move(file)) {}
  const uint8_t* data() const override { return file_->data(); }
  size_t size() const override { return file_->size(); }

 private:
  std::shared_ptr<const MemFile> file_;
};

std::string NormalizeMemPath(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') {
      continue;
    }
    out.push_back(c);
  }
  if (out.size() > 1 && out.back() == '/') {
    out.pop_back();
  }
  return out;
}

class MemEnv final : public Env {
 public:
  explicit MemEnv(std::map<std::string, std::string> files) {
    for (auto& [path, bytes] : files) {
      files_[NormalizeMemPath(path)] = std::make_shared<const MemFile>(bytes);
    }
  }

  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> NewReadOnlyRegion(
      const std::string& path) override {
    absl::StatusOr<std::shared_ptr<const MemFile>> file = Find(path, "open");
    if (!file.ok()) {
      return file.status();
    }
    return std::make_unique<MemRegion>(*std::move(file));
  }

  absl::StatusOr<std::string> ReadFileToString(const std::string& path) override {
    absl::StatusOr<std::shared_ptr<const MemFile>> file = Find(path, "open");
    if (!file.ok()) {
      return file.status();
    }
    return std::string(reinterpret_cast<const char*>((*file)->data()), (*file)->size());
  }

  bool FileExists(const std::string& path) override {
    return CheckPath(path).ok() && files_.count(NormalizeMemPath(path)) > 0;
  }

  bool IsDirectory(const std::string& path) override {
    if (!CheckPath(path).ok()) {
      return false;
    }
    std::string prefix = DirPrefix(path);
    auto it = files_.lower_bound(prefix);
    return it != files_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
  }

  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    absl::StatusOr<std::shared_ptr<const MemFile>> file = Find(path, "stat");
    if (!file.ok()) {
      return file.status();
    }
    return static_cast<uint64_t>((*file)->size());
  }

  absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path) override {
    if (absl::Status s = CheckPath(path); !s.ok()) {
      return s;
    }
    if (files_.count(NormalizeMemPath(path)) > 0) {
      return absl::FailedPreconditionError(absl::StrCat("opendir \"", path, "\": not a directory"));
    }
    std::string prefix = DirPrefix(path);
    std::vector<std::string> names;
    for (auto it = files_.lower_bound(prefix);
         it != files_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      std::string_view rest = std::string_view(it->first).substr(prefix.size());
      std::string_view name = rest.substr(0, rest.find('/'));
      // Files under one child directory are adjacent keys; skip the repeats cheaply.
      if (names.empty() || names.back() != name) {
        names.emplace_back(name);
      }
    }
    if (names.empty()) {
      return absl::NotFoundError(absl::StrCat("opendir \"", path, "\": No such file or directory"));
    }
    // Key order is not name order: "a.b" < "a/x" as keys, yet "a" < "a.b" as names.
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return names;
  }

 private:
  // "dir" -> "dir/", "/" -> "/".
  static std::string DirPrefix(const std::string& path) {
    std::string prefix = NormalizeMemPath(path);
    if (prefix.empty() || prefix.back() != '/') {
      prefix.push_back('/');
    }
    return prefix;
  }

  absl::StatusOr<std::shared_ptr<const MemFile>> Find(const std::string& path,
                                                      absl::string_view op) {
    if (absl::Status s = CheckPath(path); !s.ok()) {
      return s;
    }
    auto it = files_.find(NormalizeMemPath(path));
    if (it != files_.end()) {
      return it->second;
    }
    if (IsDirectory(path)) {
      return absl::FailedPreconditionError(absl::StrCat(op, " \"", path, "\": is a directory"));
    }
    return absl::NotFoundError(absl::StrCat(op, " \"", path, "\": No such file or directory"));
  }

  // Immutable after construction, so no lock is needed.
  std::map<std::string, std::shared_ptr<const MemFile>> files_;
};

}  // namespace

Env* Env::Default() {
  static Env* const env = new PosixEnv();
  return env;
}

absl::StatusOr<std::unique_ptr<WritableFile>> Env::NewWritableFile(const std::string& path) {
  return absl::UnimplementedError(absl::StrCat("this Env is read-only: cannot write ", path));
}
absl::Status Env::CreateDirs(const std::string& path) {
  return absl::UnimplementedError(absl::StrCat("this Env is read-only: cannot create ", path));
}
absl::Status Env::RenameFile(const std::string& from, const std::string& to) {
  return absl::UnimplementedError(absl::StrCat("this Env is read-only: cannot rename ", from));
}
absl::Status Env::RemoveAll(const std::string& path) {
  return absl::UnimplementedError(absl::StrCat("this Env is read-only: cannot remove ", path));
}

std::unique_ptr<Env> NewMemEnv(std::map<std::string, std::string> files) {
  return std::make_unique<MemEnv>(std::move(files));
}

std::string JoinPath(std::string_view dir, std::string_view name) {
  if (dir.empty()) {
    return std::string(name);
  }
  std::string out(dir);
  if (out.back() != '/') {
    out.push_back('/');
  }
  out.append(name);
  return out;
}

}  // namespace quantserve::common

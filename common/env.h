#pragma once
// Env: the file-system seam. Everything in quantserve that reads model files goes through an
// `Env*` handed to it, never through POSIX calls or <fstream> directly, so tests can inject an
// in-memory or fault-injecting file system (the LevelDB pattern).
//
// Two implementations live here:
//   * `Env::Default()`: the POSIX file system. Files are mapped with mmap(PROT_READ,
//     MAP_PRIVATE). It is the one process-wide singleton quantserve allows; it is never
//     deleted.
//   * `NewMemEnv(files)`: an immutable in-memory file system built from a path -> bytes map,
//     for tests and tools.
//
// Thread-safety: every Env method may be called concurrently from any thread. A
// `ReadOnlyRegion` is immutable and may be read from any thread; it is owned by whoever
// received the unique_ptr, and it stays valid after the Env that made it is destroyed.
//
// Errors: a missing path is NOT_FOUND; other failures use the canonical code of the errno
// (PERMISSION_DENIED, FAILED_PRECONDITION for "is a directory", RESOURCE_EXHAUSTED, ...).
// Every message names the path.
//
// Mapped files must not be truncated in place while a region is alive (a writer that writes a
// temporary file and renames it over the old one is safe): reading a mapped page past the new
// end of a truncated file raises SIGBUS.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::common {

// A read-only view of a whole file's bytes (an mmap for the POSIX Env). Unmapped/freed on
// destruction. A 0-byte file gives a region with size() == 0 and a non-null data().
class ReadOnlyRegion {
 public:
  virtual ~ReadOnlyRegion() = default;

  // First byte of the file. Never null. Aligned to at least 64 bytes (a page for mmap).
  virtual const uint8_t* data() const = 0;
  // Length of the file in bytes at the time the region was created.
  virtual size_t size() const = 0;
  // Hint that bytes [offset, offset + length) will not be read again, so their pages can leave
  // the resident set (a streaming loader calls it after each tensor). The bytes stay readable.
  virtual void DropPages(size_t offset, size_t length) const {}
};

class Env {
 public:
  virtual ~Env() = default;

  // The POSIX file system. Thread-safe, never null, never deleted.
  static Env* Default();

  // Maps the whole regular file at `path` read-only.
  virtual absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> NewReadOnlyRegion(
      const std::string& path) = 0;

  // Reads the whole regular file at `path`.
  virtual absl::StatusOr<std::string> ReadFileToString(const std::string& path) = 0;

  // True iff `path` names a regular file (symlinks followed). Errors read as false.
  virtual bool FileExists(const std::string& path) = 0;

  // True iff `path` names a directory (symlinks followed). Errors read as false.
  virtual bool IsDirectory(const std::string& path) = 0;

  // Size in bytes of the regular file at `path`; FAILED_PRECONDITION for a directory.
  virtual absl::StatusOr<uint64_t> GetFileSize(const std::string& path) = 0;

  // Names (not paths) of the entries of directory `path`, sorted, without "." and "..".
  virtual absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path) = 0;
};

// An immutable in-memory Env whose regular files are `files` (path -> contents). Paths are
// compared after collapsing repeated '/' and dropping a trailing '/'; "a/b" and "/a/b" are
// different files. Directories exist implicitly: every proper prefix of a file path that
// ends at a '/' is a directory ("/" too, when any absolute path is present).
std::unique_ptr<Env> NewMemEnv(std::map<std::string, std::string> files);

// Joins a directory and a relative name with exactly one '/'. An empty `dir` yields `name`.
std::string JoinPath(std::string_view dir, std::string_view name);

}  // namespace quantserve::common

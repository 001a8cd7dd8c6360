#pragma once
// Env: the file-system seam. Everything in quantserve that reads model files goes through an
// `Env*` handed to it, never through POSIX calls or <fstream> directly, so tests can inject an
// in-memory or fault-injecting file system (the LevelDB pattern).
//
// Writes (SaveModel) go through it too: WritableFile, CreateDirs, RenameFile, RemoveAll. The
// in-memory Env is read-only (UNIMPLEMENTED); tests/testing/fault_injection_env.h wraps an Env
// to fail chosen writes, syncs and renames (a full disk, an I/O error).
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

// A file being written. Append buffers; Sync flushes and fsyncs; Close syncs nothing (call
// Sync first for durability) and is implied by destruction. Not thread-safe.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual absl::Status Append(std::string_view data) = 0;
  virtual absl::Status Sync() = 0;
  virtual absl::Status Close() = 0;
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

  // Writing. A full disk is RESOURCE_EXHAUSTED (ENOSPC, EDQUOT), other failures the errno's
  // code. Defaults: UNIMPLEMENTED (read-only Envs).
  // Creates or truncates the regular file at `path`.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path);
  // Creates `path` and its missing parents; OK when it already is a directory.
  virtual absl::Status CreateDirs(const std::string& path);
  // rename(2): atomic within one file system; replaces an empty directory at `to`.
  virtual absl::Status RenameFile(const std::string& from, const std::string& to);
  // Removes `path` and everything under it; OK when nothing is there.
  virtual absl::Status RemoveAll(const std::string& path);
};

// An immutable in-memory Env whose regular files are `files` (path -> contents). Paths are
// compared after collapsing repeated '/' and dropping a trailing '/'; "a/b" and "/a/b" are
// different files. Directories exist implicitly: every proper prefix of a file path that
// ends at a '/' is a directory ("/" too, when any absolute path is present).
std::unique_ptr<Env> NewMemEnv(std::map<std::string, std::string> files);

// Joins a directory and a relative name with exactly one '/'. An empty `dir` yields `name`.
std::string JoinPath(std::string_view dir, std::string_view name);

}  // namespace quantserve::common

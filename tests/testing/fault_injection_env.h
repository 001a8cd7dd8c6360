#pragma once
// An Env that forwards to another and fails one chosen write operation, as a full disk or a
// failing device would (the LevelDB test pattern): the `fail_at`-th call (1-based, counted
// over the whole Env) of `op` returns the errno's status and does nothing. Reads always pass.

#include <atomic>
#include <cerrno>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/env.h"

namespace quantserve::testing {

class FaultInjectionEnv final : public common::Env {
 public:
  enum class Op { kAppend, kSync, kRename, kCreateDirs, kNewFile };

  FaultInjectionEnv(common::Env* base, Op op, int fail_at, int error_number)
      : base_(base), op_(op), fail_at_(fail_at), errno_(error_number) {}

  // How many times the failure fired (0 or 1).
  int failures() const { return failures_.load(); }

  absl::StatusOr<std::unique_ptr<common::ReadOnlyRegion>> NewReadOnlyRegion(
      const std::string& path) override {
    return base_->NewReadOnlyRegion(path);
  }
  absl::StatusOr<std::string> ReadFileToString(const std::string& path) override {
    return base_->ReadFileToString(path);
  }
  bool FileExists(const std::string& path) override { return base_->FileExists(path); }
  bool IsDirectory(const std::string& path) override { return base_->IsDirectory(path); }
  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    return base_->GetFileSize(path);
  }
  absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path) override {
    return base_->ListDirectory(path);
  }

  absl::StatusOr<std::unique_ptr<common::WritableFile>> NewWritableFile(
      const std::string& path) override {
    if (absl::Status s = Maybe(Op::kNewFile, path); !s.ok()) return s;
    auto file = base_->NewWritableFile(path);
    if (!file.ok()) return file.status();
    return std::unique_ptr<common::WritableFile>(new File(this, path, *std::move(file)));
  }
  absl::Status CreateDirs(const std::string& path) override {
    if (absl::Status s = Maybe(Op::kCreateDirs, path); !s.ok()) return s;
    return base_->CreateDirs(path);
  }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    if (absl::Status s = Maybe(Op::kRename, from); !s.ok()) return s;
    return base_->RenameFile(from, to);
  }
  absl::Status RemoveAll(const std::string& path) override { return base_->RemoveAll(path); }

 private:
  class File final : public common::WritableFile {
   public:
    File(FaultInjectionEnv* env, std::string path, std::unique_ptr<common::WritableFile> base)
        : env_(env), path_(std::move(path)), base_(std::move(base)) {}
    absl::Status Append(std::string_view data) override {
      if (absl::Status s = env_->Maybe(Op::kAppend, path_); !s.ok()) return s;
      return base_->Append(data);
    }
    absl::Status Sync() override {
      if (absl::Status s = env_->Maybe(Op::kSync, path_); !s.ok()) return s;
      return base_->Sync();
    }
    absl::Status Close() override { return base_->Close(); }

   private:
    FaultInjectionEnv* env_;
    const std::string path_;
    std::unique_ptr<common::WritableFile> base_;
  };

  absl::Status Maybe(Op op, const std::string& path) {
    if (op != op_ || ++calls_ != fail_at_) return absl::OkStatus();
    ++failures_;
    return absl::Status(absl::ErrnoToStatusCode(errno_),
                        absl::StrCat("injected fault on \"", path, "\": errno ", errno_));
  }

  common::Env* const base_;
  const Op op_;
  const int fail_at_;
  const int errno_;
  std::atomic<int> calls_{0};
  std::atomic<int> failures_{0};
};

}  // namespace quantserve::testing

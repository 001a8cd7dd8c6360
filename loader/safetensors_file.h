#pragma once
// SafetensorsFile: one .safetensors file, mapped read-only and fully validated.
//
// A safetensors file is `u64 little-endian N | N bytes of JSON header | data section`. The
// header maps tensor names to {dtype, shape, data_offsets}, offsets relative to the data
// section, plus an optional "__metadata__" string->string object.
//
// Where it sits: the first step of loading weights. `Checkpoint` (checkpoint.h) opens one of
// these per shard; the load pipeline then streams tensors out of them. No LibTorch here.
//
// Trust: the file is untrusted input. `Open` checks every rule in loader/FORMAT.md (sizes,
// JSON shape, dtypes, shapes, offsets, exact coverage of the data section) before any tensor
// byte is read, and a file that breaks one is refused with DATA_LOSS, naming the file, the
// tensor and the rule. After a successful `Open`, every span handed out lies inside the file.
// Tensor bytes are neither copied nor read by `Open`.
//
// Ownership and threads: the object owns the mapping; spans returned by `TensorData` /
// `GetTensorData` point into it and are valid while the object lives. The object is immutable
// after `Open`, so all methods are safe to call concurrently. Tensor data is little-endian,
// C-contiguous, and is only as aligned as the file makes it (writers pad the header to a
// multiple of 8; nothing enforces it), so read typed values with memcpy or check alignment.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/env.h"
#include "loader/dtype.h"

namespace quantserve::loader {

// Largest JSON header accepted, in bytes. The safetensors reference implementation (Rust
// crate) uses the same limit, so every file it accepts passes ours.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// One tensor's header entry, validated.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::kU8;
  // Dimensions, outermost first; empty for a 0-d (scalar) tensor. Each fits int64_t.
  std::vector<int64_t> shape;
  // Product of `shape` (1 for 0-d, 0 when any dimension is 0).
  uint64_t numel = 0;
  // The header's data_offsets [data_begin, data_end), relative to the data section.
  uint64_t data_begin = 0;
  uint64_t data_end = 0;
  // Absolute offset of the first byte in the file: SafetensorsFile::data_offset() + data_begin.
  uint64_t file_offset = 0;

  uint64_t byte_size() const { return data_end - data_begin; }
};

class SafetensorsFile {
 public:
  // Maps `path` through `env` and validates it. Errors: the Env's status when the file cannot
  // be mapped (NOT_FOUND when missing); DATA_LOSS for any broken format rule;
  // INVALID_ARGUMENT for a null env.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(common::Env* env,
                                                               const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return region_->size(); }
  // N, the length of the JSON header.
  uint64_t header_size() const { return header_size_; }
  // 8 + N: where the data section starts in the file.
  uint64_t data_offset() const { return 8 + header_size_; }
  // Sum of all tensors' byte sizes; equals file_size() - data_offset() (coverage rule).
  uint64_t tensor_bytes() const { return file_size() - data_offset(); }

  // All tensors ordered by data offset (ties, possible only between empty tensors, by name):
  // the order the bytes sit in the file, so walking it reads the file front to back. JSON
  // objects do not preserve the header's key order, and this is the order that matters.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // The names of tensors(), in the same order.
  std::vector<std::string> TensorNames() const;

  // The "__metadata__" entries; empty when the header has none.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor called `name`, or nullptr.
  const TensorInfo* FindTensor(std::string_view name) const;
  // The tensor called `name`; NOT_FOUND naming the file and the tensor when absent.
  absl::StatusOr<const TensorInfo*> GetTensorInfo(std::string_view name) const;

  // The bytes of `info`, which must be an element of tensors() of this object.
  absl::Span<const uint8_t> TensorData(const TensorInfo& info) const {
    return absl::Span<const uint8_t>(region_->data() + info.file_offset, info.byte_size());
  }
  // The bytes of the tensor called `name`; NOT_FOUND naming the file and tensor when absent.
  absl::StatusOr<absl::Span<const uint8_t>> GetTensorData(std::string_view name) const;

  // Tells the OS that `info`'s bytes are consumed (see ReadOnlyRegion::DropPages).
  void ReleaseTensorData(const TensorInfo& info) const {
    region_->DropPages(info.file_offset, info.byte_size());
  }

 private:
  SafetensorsFile(std::string path, std::unique_ptr<common::ReadOnlyRegion> region);

  // Runs every FORMAT.md rule over region_ and fills the members below.
  absl::Status Parse();

  std::string path_;
  std::unique_ptr<common::ReadOnlyRegion> region_;
  uint64_t header_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

}  // namespace quantserve::loader

#pragma once
// Checkpoint: the weights of one Hugging Face model directory, as a validated, merged index of
// tensor name -> (shard file, TensorInfo) over mapped safetensors files.
//
// Layouts, tried in transformers' order:
//   1. `model.safetensors`: a single file.
//   2. `model.safetensors.index.json`: sharded. Its "weight_map" maps each tensor name to a
//      shard file name in the same directory; each shard is a safetensors file.
// Pickled checkpoints (`pytorch_model.bin`, `*.bin`, `*.pt`, ...) are refused with
// FAILED_PRECONDITION: unpickling can run code from the model file. A directory with neither
// layout is NOT_FOUND. The complete rule list, with codes and messages, is loader/FORMAT.md.
//
// Where it sits: step 6/7 of DESIGN.md's load lifecycle. The pipeline reconciles `tensors()`
// with the architecture's expected names, then streams `tensors()` in order (shard by shard,
// each shard front to back), so reads stay sequential.
//
// Ownership and threads: the Checkpoint owns its shards (mappings); `CheckpointTensor`
// pointers and data spans are valid while it lives. Immutable after `Open`; all methods are
// safe to call concurrently.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/env.h"
#include "loader/safetensors_file.h"

namespace quantserve::loader {

// A tensor of a checkpoint: which shard holds it and its header entry.
struct CheckpointTensor {
  const SafetensorsFile* shard = nullptr;  // owned by the Checkpoint
  const TensorInfo* info = nullptr;        // owned by `shard`
  size_t shard_index = 0;                  // position of `shard` in Checkpoint::shards()

  const std::string& name() const { return info->name; }
  absl::Span<const uint8_t> data() const { return shard->TensorData(*info); }
};

class Checkpoint {
 public:
  enum class Layout { kSingleFile, kSharded };

  static constexpr char kSingleFileName[] = "model.safetensors";
  static constexpr char kIndexFileName[] = "model.safetensors.index.json";
  // Largest index file read, in bytes (real ones are tens to hundreds of KiB).
  static constexpr uint64_t kMaxIndexBytes = 100'000'000;

  // Finds, opens and cross-checks the checkpoint in `model_dir`. Errors: NOT_FOUND when the
  // directory or both layouts are missing; FAILED_PRECONDITION when only pickled weights
  // exist; DATA_LOSS for a corrupt index, shard, or an index that disagrees with its shards;
  // the Env's code for I/O failures; INVALID_ARGUMENT for a null env.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(common::Env* env,
                                                          const std::string& model_dir);

  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::string& dir() const { return dir_; }
  Layout layout() const { return layout_; }
  // Path of model.safetensors or of the index file.
  const std::string& source_path() const { return source_path_; }

  // The shard files (one for kSingleFile), ordered by file name.
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }

  // Every tensor, in streaming order: by shard (as in shards()), then by offset in the shard.
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  size_t num_tensors() const { return tensors_.size(); }
  // Sum of all tensors' byte sizes.
  uint64_t total_tensor_bytes() const { return total_tensor_bytes_; }

  // The tensor called `name`, or nullptr.
  const CheckpointTensor* FindTensor(std::string_view name) const;
  // The tensor called `name`; NOT_FOUND naming the directory and the tensor when absent.
  absl::StatusOr<CheckpointTensor> GetTensor(std::string_view name) const;
  // The bytes of the tensor called `name` (a view into its shard's mapping).
  absl::StatusOr<absl::Span<const uint8_t>> GetTensorData(std::string_view name) const;

 private:
  Checkpoint(std::string dir, Layout layout, std::string source_path,
             std::vector<std::unique_ptr<SafetensorsFile>> shards);

  std::string dir_;
  Layout layout_;
  std::string source_path_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<CheckpointTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  uint64_t total_tensor_bytes_ = 0;
};

}  // namespace quantserve::loader

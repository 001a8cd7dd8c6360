#pragma once
// SaveModel: writes a loaded model as a Hugging Face model directory that transformers (with
// the method's library) and quantserve load back:
//
//   config.json                      the source config.json with "quantization_config" set to
//                                    the quantizer's SerializedConfigJson (removed when none)
//                                    and "torch_dtype"/"dtype" set to the loaded dtype
//   model.safetensors                or model-0000K-of-0000N.safetensors shards of at most
//   model.safetensors.index.json     max_shard_bytes each + the index (as save_pretrained)
//   tokenizer and generation files   copied from the source directory
//
// Tensors come from Quantizer::SerializedState in the method's serialized layout, so the
// next load streams packed tensors instead of quantizing again. The directory is written
// under a temporary name next to `output_dir` and renamed into place when complete: a failed
// or interrupted save leaves nothing half-written at `output_dir`.

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/env.h"
#include "loader/load_pipeline.h"

namespace quantserve::loader {

struct SaveModelOptions {
  std::string output_dir;  // must not exist, or be an empty directory
  // transformers' max_shard_size; a tensor larger than this gets a shard of its own.
  int64_t max_shard_bytes = 50LL * 1000 * 1000 * 1000;
  // Where every file is read and written (tests inject faults through it).
  common::Env* env = common::Env::Default();
};

struct SaveModelResult {
  std::vector<std::string> files;  // written, relative to output_dir
  int64_t tensor_bytes = 0;        // sum of the saved tensors' bytes
  int64_t tensors = 0;
  double seconds = 0;
};

// FAILED_PRECONDITION when the method is not serializable; ALREADY_EXISTS when output_dir is
// a non-empty directory or a file; INVALID_ARGUMENT for a bad option; RESOURCE_EXHAUSTED for
// a full disk; other I/O errors with their errno's code, naming the path. The files are
// written and fsynced in a temporary sibling directory renamed into place at the end: on any
// failure nothing is left behind (output_dir and the temporary are gone).
absl::StatusOr<SaveModelResult> SaveModel(const LoadedModel& model, const std::string& source_dir,
                                          const SaveModelOptions& options);

// Writes one safetensors file holding `tensors` (any device; copied to the host one at a time)
// in order, with `metadata` plus "format": "pt" as its "__metadata__".
absl::Status WriteSafetensorsFile(const std::string& path,
                                  const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {},
                                  common::Env* env = common::Env::Default());

// "float32" | "bfloat16" | "float16" (the config.json torch_dtype spelling).
std::string TorchDtypeName(c10::ScalarType dtype);

}  // namespace quantserve::loader

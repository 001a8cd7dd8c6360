#pragma once
// LoadPipeline: from a model directory to a materialized model, in from_pretrained's order.
//
//   config.json -> quantizer (registry) -> ValidateEnvironment/UpdateTorchDtype -> skeleton on
//   the meta device -> ProcessModelBeforeWeightLoading -> reconcile tensor names -> stream
//   tensors one at a time (quantize/repack or copy onto the target device) ->
//   ProcessModelAfterWeightLoading.
//
// Host memory stays near the final model size plus one tensor: tensors are read from the
// mmap'd checkpoint one by one, converted straight to their destination and the source pages
// are dropped. Runs on the calling (load pool) thread; progress is reported on it too.

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/env.h"
#include "loader/dtype.h"
#include "models/bert.h"
#include "models/llama.h"
#include "models/model_config.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::loader {

struct LoadPipelineOptions {
  common::Env* env = common::Env::Default();             // file access (injectable for tests)
  const quant::QuantizerRegistry* registry = nullptr;    // null = the builtin registry
  std::string model_dir;                                 // directory with config.json
  std::string quantization_config_json;                  // request's config; "" = checkpoint's
  std::string dtype = "auto";                            // auto|float32|bfloat16|float16
  std::string device = "cpu";                            // cpu|auto|cuda|cuda:N
  // Per-device byte budgets ("cpu", "cuda:0"; see ParseMaxMemory); a load whose estimated
  // size (after quantization, times the quantizer's MaxMemoryFraction) exceeds the budget of
  // its device is RESOURCE_EXHAUSTED before any tensor is read. Empty = no budget, though a
  // CPU load must still fit in the host's available memory.
  std::map<std::string, int64_t> max_memory;
  // transformers' dict device_map (module prefix -> "cpu"|"disk"|"cuda:N"), handed to the
  // quantizer in LoadTarget; empty: everything on `device`. Placement itself is not done yet.
  std::map<std::string, std::string> device_map;
  // The caller will calibrate the model after loading (engine: LoadOptions::calibration_texts
  // is not empty); handed to the quantizer in LoadTarget.
  bool has_calibration_texts = false;
  // The CPU 4-bit kernels' input precision (16 or 8), handed to the quantizer in LoadTarget.
  int activation_bits = 16;
};

struct LoadPipelineProgress {
  std::string phase;  // config|quantizer|skeleton|weights|post_process|ready
  int64_t tensors_done = 0;
  int64_t tensors_total = 0;
  int64_t bytes_done = 0;
  int64_t bytes_total = 0;
};

// A materialized model; exactly one of `causal_lm` / `encoder` is set.
struct LoadedModel {
  models::ModelConfig config;
  std::shared_ptr<models::LlamaForCausalLM> causal_lm;
  std::shared_ptr<models::BertModel> encoder;
  std::unique_ptr<quant::Quantizer> quantizer;
  c10::ScalarType dtype = c10::ScalarType::Float;
  c10::Device device = c10::Device(c10::kCPU);
  int64_t parameters = 0;              // elements of all (deduplicated) parameters
  int64_t memory_footprint_bytes = 0;  // bytes of all (deduplicated) parameters + quant state
  int64_t peak_rss_growth_bytes = 0;   // peak resident-set growth during the load (sampled)
  double seconds = 0;
};

absl::StatusOr<LoadedModel> RunLoadPipeline(
    const LoadPipelineOptions& options,
    const std::function<void(const LoadPipelineProgress&)>& on_progress);

// The torch type of a safetensors element type; nullopt for types LibTorch cannot hold
// (F6, F4, E8M0, fnuz float8s, complex).
std::optional<c10::ScalarType> ToScalarType(Dtype dtype);

// "float32" -> Float etc.; "auto" resolves to `checkpoint_dtype` (config.json's torch_dtype,
// float32 when absent). INVALID_ARGUMENT names the allowed values.
absl::StatusOr<c10::ScalarType> ResolveDtype(const std::string& requested,
                                             const std::string& checkpoint_dtype);

// "cpu" | "auto" (first CUDA device if any, else cpu) | "cuda" | "cuda:N". A CUDA device this
// process cannot use is FAILED_PRECONDITION.
absl::StatusOr<c10::Device> ResolveDevice(const std::string& requested);

// Every tensor of one safetensors file, copied into CPU tensors of its own dtype (for small
// files: reference outputs, quantization state). DATA_LOSS/INVALID_ARGUMENT name the tensor.
absl::StatusOr<std::map<std::string, at::Tensor>> ReadSafetensorsFile(common::Env* env,
                                                                      const std::string& path);

// accelerate's max_memory JSON: {"cpu": "8GiB", "0": "20GB", "cuda:1": 1073741824}. Sizes
// are byte counts or strings with B/KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers
// of 1024); device keys are "cpu", a GPU index or "cuda:N" (normalized to "cuda:N"); "disk"
// is refused (no offloading). INVALID_ARGUMENT naming the entry otherwise.
absl::StatusOr<std::map<std::string, int64_t>> ParseMaxMemory(const std::string& json_text);

// Bytes the host can still give this process (MemAvailable), or -1 when unknown.
int64_t AvailableHostMemoryBytes();

// Current resident set size of this process in bytes (0 if unknown).
int64_t CurrentRssBytes();

}  // namespace quantserve::loader

#pragma once
// Quantizer: one quantization method's part in loading a model, with transformers'
// HfQuantizer hooks in the order from_pretrained calls them:
//
//   ValidateEnvironment -> UpdateTorchDtype
//   -> ProcessModelBeforeWeightLoading   (on the meta-device skeleton: swap Linear modules)
//   -> EstimatedParamBytes / MaxMemoryFraction (the fit check before reading; HF's
//      param_element_size / adjust_max_memory)
//   -> for each streamed tensor: CheckQuantizedParam ? CreateQuantizedParam : plain copy
//   -> ProcessModelAfterWeightLoading    (repack for kernels, free scratch)
//   -> WantsCalibration ? Calibrate       (static activation scales, run by the engine)
//
// A pre-quantized checkpoint (config.json has a quantization_config) runs the same hooks:
// the skeleton gets the method's serialized layout, CheckQuantizedParam accepts the packed
// tensors and CreateQuantizedParam stores them (no float round trip). SaveModel asks
// SerializedState / SerializedConfigJson for the inverse.
//
// A Quantizer is created per load from its parsed config by the QuantizerRegistry, used by
// one load thread, then kept with the model (its normalized config is reported in ModelInfo).
// Not thread-safe; the loader calls it from one thread.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/module.h"

namespace quantserve::quant {

// What transformers' HfQuantizer exposes as class attributes.
struct QuantizerTraits {
  bool requires_calibration = false;  // can only load checkpoints quantized offline
  bool is_serializable = true;        // SaveModel can write its layout
  bool is_trainable = false;
  bool requires_parameters_quantization = false;  // CreateQuantizedParam does the work
};

// Where and how the model is being loaded.
struct LoadTarget {
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::ScalarType::Float;  // compute dtype after UpdateTorchDtype
  bool checkpoint_is_prequantized = false;        // config.json carried a quantization_config
  bool has_calibration_texts = false;  // the load brings calibration texts (see Calibrate)
  int activation_bits = 16;  // the CPU 4-bit kernels' input precision: 16 or 8 (opt-in)
  // Module prefix -> "cpu" | "disk" | "cuda:N" (empty: everything on `device`).
  std::map<std::string, std::string> device_map;
  // The checkpoint's safetensors "__metadata__" entries, merged over its shards (torchao
  // keeps its tensor metadata there).
  std::map<std::string, std::string> checkpoint_metadata;
};

class Quantizer {
 public:
  virtual ~Quantizer() = default;

  // The HF `quant_method` string ("bitsandbytes", "gptq", ...; "none" when unquantized).
  virtual const std::string& quant_method() const = 0;
  virtual const QuantizerTraits& traits() const = 0;
  // The config as JSON with every default filled in (what ModelInfo reports).
  virtual std::string NormalizedConfigJson() const = 0;

  // FAILED_PRECONDITION when this method cannot run here (device, calibration-only on an
  // unquantized checkpoint, ...).
  virtual absl::Status ValidateEnvironment(const LoadTarget& target) { return absl::OkStatus(); }
  // Returns the compute dtype to use, given the one requested (after "auto" resolution).
  virtual c10::ScalarType UpdateTorchDtype(c10::ScalarType requested) { return requested; }
  // transformers' adjust_max_memory: the share of a max_memory budget the weights may take
  // (bitsandbytes, quanto and torchao keep 10% for quantization buffers).
  virtual double MaxMemoryFraction() const { return 1.0; }
  // transformers' param_element_size: the bytes skeleton parameter `name` (its expected
  // shape and dtype in `meta`) will take once loaded; used to refuse loads that cannot fit
  // before any tensor is read. Called after ProcessModelBeforeWeightLoading.
  virtual int64_t EstimatedParamBytes(const std::string& name, const at::Tensor& meta) const {
    return meta.numel() * static_cast<int64_t>(meta.element_size());
  }
  virtual absl::Status ProcessModelBeforeWeightLoading(models::Module& root,
                                                       const LoadTarget& target) {
    return absl::OkStatus();
  }
  // True when the checkpoint tensor `name` must go through CreateQuantizedParam.
  virtual bool CheckQuantizedParam(const std::string& name) const { return false; }
  // Quantizes or repacks `value` (the checkpoint tensor, on CPU, checkpoint dtype) into the
  // model; DATA_LOSS/INVALID_ARGUMENT naming `name` on bad input. `value` may view the
  // read-only mapped checkpoint and is valid only during the call: never write to it or keep
  // it (or a view of it); keep computed tensors only.
  virtual absl::Status CreateQuantizedParam(const std::string& name, const at::Tensor& value,
                                            models::ParamSlot& slot, const LoadTarget& target) {
    return absl::UnimplementedError("CreateQuantizedParam is not implemented for " +
                                    quant_method());
  }
  virtual absl::Status ProcessModelAfterWeightLoading(models::Module& root,
                                                      const LoadTarget& target) {
    return absl::OkStatus();
  }

  // Calibration: static activation scales measured on sample text (quanto with
  // `activations`). Once the load pipeline has finished, the engine asks WantsCalibration();
  // when true it calls Calibrate exactly once on the load thread, and `run_texts` runs the
  // model's forward once per LoadModelRequest.calibration_texts entry (in order, tokenized
  // with special tokens, as Score does). The quantizer switches its modules into recording
  // mode, calls `run_texts`, then fixes the scales; the model is served only if it returns OK.
  // A method that needs texts refuses a load without them in ValidateEnvironment
  // (LoadTarget::has_calibration_texts), before any weight is read.
  virtual bool WantsCalibration() const { return false; }
  virtual absl::Status Calibrate(models::Module& root,
                                 const std::function<absl::Status()>& run_texts) {
    return absl::FailedPreconditionError(quant_method() + " does not calibrate");
  }

  // SaveModel: every tensor of the loaded `root` by checkpoint name, in the method's
  // serialized layout (tied aliases left out), such that loading them with
  // SerializedConfigJson() reproduces the model. FAILED_PRECONDITION naming the reason when
  // the method cannot be saved (transformers' is_serializable). Default: the parameters.
  virtual absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> SerializedState(
      const models::Module& root) const;
  // The quantization_config written to the saved config.json ("" = none).
  virtual std::string SerializedConfigJson() const { return NormalizedConfigJson(); }
  // Files SaveModel writes beside the weights, name -> contents (optimum-quanto's
  // quanto_qmap.json). Default: none.
  virtual std::map<std::string, std::string> ExtraSavedFiles() const { return {}; }
  // Extra safetensors "__metadata__" entries, written into every saved shard (torchao keeps
  // its tensor subclass metadata there), given all saved tensor names.
  virtual std::map<std::string, std::string> SafetensorsMetadata(
      const std::vector<std::string>& tensor_names) const {
    return {};
  }
};

}  // namespace quantserve::quant

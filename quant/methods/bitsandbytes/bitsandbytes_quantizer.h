#pragma once
// BitsAndBytesQuantizer: transformers 5.23's Bnb8BitHfQuantizer / Bnb4BitHfQuantizer (one
// class; BitsAndBytesConfig's load_in_8bit / load_in_4bit picks the module).
//
//   traits            requires_calibration false, serializable, trainable, quantizes params
//   ValidateEnvironment  a device_map mixing cpu/disk with an accelerator needs
//                     llm_int8_enable_fp32_cpu_offload (INVALID_ARGUMENT otherwise)
//   UpdateTorchDtype  unchanged (5.23's bnb quantizers keep HfQuantizer.update_dtype)
//   skip rule         llm_int8_skip_modules REPLACES the default skips (lm_head, tied weights,
//                     last parameter); with fp32 CPU offload every device_map key sent to
//                     cpu/disk is skipped too (left in the model dtype).
//   MakeLinear        BnbLinear8bitLt / BnbLinear4bit, quantized as each weight streams in
//   pre-quantized     the modules register bnb's serialized layout (what save_pretrained
//                     writes) and validate it; the checkpoint's config wins over a request's
//                     (BitsAndBytesConfig has no loading attributes in transformers)
//   save              the modules' state as bnb's state_dict() has it, the config as to_dict()
//
// A Linear whose weight is tied (lm_head with tie_word_embeddings) cannot be converted:
// transformers would swap it and fail at the first forward, so we refuse the config at load.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/bitsandbytes/bitsandbytes_config.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class BitsAndBytesQuantizer final : public LinearQuantizer {
 public:
  // INVALID_ARGUMENT for a config transformers rejects (BitsAndBytesConfig::Parse).
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  absl::Status ValidateEnvironment(const LoadTarget& target) override;
  absl::Status ProcessModelBeforeWeightLoading(models::Module& root,
                                               const LoadTarget& target) override;
  // adjust_max_memory: bnb keeps 10% of each budget for quantization buffers.
  double MaxMemoryFraction() const override { return 0.9; }

  const BitsAndBytesConfig& config() const { return config_; }

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override;
  std::vector<std::string> ModulesToNotConvert(const models::Module& root) const override;
  bool ShouldConvert(const std::string& name, const std::vector<std::string>& skip) const override;
  // int8 codes + an f32 SCB per row; 4-bit codes + the absmax per 64-block (8-bit codes and
  // an f32 per 256 of them with double quant); the float weight with has_fp16_weight.
  double EstimatedWeightBits(const std::string& name) const override;
  absl::Status PrequantizedSupport() const override;

 private:
  explicit BitsAndBytesQuantizer(BitsAndBytesConfig config);

  BitsAndBytesConfig config_;
  // device_map keys sent to cpu/disk under llm_int8_enable_fp32_cpu_offload.
  std::vector<std::string> offloaded_;
};

absl::Status RegisterBitsAndBytesQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant

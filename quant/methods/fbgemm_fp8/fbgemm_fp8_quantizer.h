#pragma once
// FbgemmFp8Quantizer: transformers' FbgemmFp8HfQuantizer for an unquantized checkpoint
// quantized at load.
//
//   traits                 requires_calibration false, serializable, not trainable
//   ValidateEnvironment    no device check: transformers needs fbgemm-gpu on a GPU of compute
//                          capability >= 9.0; we reproduce its arithmetic with ATen anywhere
//   UpdateTorchDtype       bfloat16 whatever was requested: transformers 5.23's update_dtype
//                          overrides every other dtype (float16 and float32 included) with a
//                          warning, since fbgemm's kernels read and write bfloat16
//   skip rule              transformers' default (lm_head, tied weights) + modules_to_not_convert
//   modules                FbgemmFp8Linear (see fbgemm_fp8_linear.h)
//   pre-quantized          checkpoints save_pretrained wrote (weight e4m3 + weight_scale);
//                          `activation_scale_ub` is a loading attribute (FbgemmFp8Config.
//                          get_loading_attributes): a request's value replaces the checkpoint's
//   save                   the same layout; the config as to_dict()

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/fbgemm_fp8/fbgemm_fp8_config.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class FbgemmFp8Quantizer final : public LinearQuantizer {
 public:
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  c10::ScalarType UpdateTorchDtype(c10::ScalarType requested) override;
  absl::Status PrequantizedSupport() const override { return absl::OkStatus(); }
  const FbgemmFp8Config& config() const { return config_; }

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override;

 private:
  explicit FbgemmFp8Quantizer(FbgemmFp8Config config);

  FbgemmFp8Config config_;
};

// Registers "fbgemm_fp8" with its loading attribute activation_scale_ub.
absl::Status RegisterFbgemmFp8Quantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant

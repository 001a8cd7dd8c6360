#pragma once
// QuantizedLinear: the part every method's Linear module shares.
//
// A method's module registers its state under the checkpoint names of its serialized layout
// (bnb: weight/SCB/weight_format; HQQ: W_q/scale/zero; ...). Names produced from the float
// weight are registered as derived parameters, so an unquantized checkpoint only has to
// provide `weight` (and `bias`), which the quantizer hands to QuantizeWeight. The weight slot
// starts as a float [out, in] meta tensor and ends holding the packed codes.

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "models/layers.h"
#include "quant/quantizer.h"

namespace quantserve::quant {

class QuantizedLinear : public models::Linear {
 public:
  using models::Linear::Linear;

  // Quantizes the float checkpoint weight [out, in] (CPU, checkpoint dtype) into this module's
  // state on `target.device`. INVALID_ARGUMENT for a shape the method cannot take.
  virtual absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) = 0;

  // The weight back in floating point, [out, in], in the module's compute dtype: the reference
  // every kernel is tested against, and transformers' `dequantize()`.
  virtual at::Tensor Dequantize() const = 0;

  // Reference forward: x @ Dequantize()^T + bias in x's dtype. Methods with their own
  // arithmetic (LLM.int8 outliers, FP8 activations) override it.
  at::Tensor Forward(const at::Tensor& x) const override;
  std::string kernel_name() const override { return "dequantize_linear_ref"; }

  // Every registered tensor (packed codes, scales, zeros, bias), like transformers'
  // get_memory_footprint over the module's parameters and buffers.
  int64_t memory_footprint_bytes() const override;

  at::Tensor bias;  // registered by the subclass when options().bias

 protected:
  // Registers `bias` as [out] in the compute dtype when options().bias.
  void RegisterBias();
};

}  // namespace quantserve::quant

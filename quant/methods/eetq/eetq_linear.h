#pragma once
// EetqLinear: transformers' `EetqLinear` (EETQ int8 weight-only, per output channel), with the
// quantization EETQ's `quant_weights` runs on the CPU (`symmetric_quantize` in
// csrc/cutlass_kernels/cutlass_preprocessors.cc, NetEase-FuXi/EETQ 465e972, unchanged in
// huggingface/kernels-community quantization-eetq) reproduced bit-exactly in ATen.
//
// State, under the names and shapes of EETQ's serialized layout:
//   weight         int8 [in, out]  Q = quantized Wᵀ, so W[n, k] = Q[k, n] · weight_scales[n]
//   weight_scales  f16  [out]
//   bias           f16  [out]      (EetqLinear declares it float16; the loader keeps that dtype)
//
// Layout: EETQ stores `weight` CUTLASS-preprocessed for the SM version of the GPU that
// quantized it (row permutation, transpose, column interleave, +128 bias and byte swap;
// eetq_layout.h; a checkpoint does not record the arch, and every EETQ checkpoint made on
// SM 7.5-8.9 has the SM80 order). We keep the PLAIN row-major Q in memory: a pre-quantized
// module registers weight int8 [in, out] and weight_scales f16 [out] as plain parameters (no
// float input slot), receives the preprocessed bytes and FinishSerializedLoad applies
// EetqUnpreprocessSm80 once; SerializedTensors writes EetqPreprocessSm80(weight). The shape
// rule below is that layout's (INVALID_ARGUMENT naming the weight otherwise); a weight_scales
// entry that is not finite and >= 0 (quant_weights stores absmax / 128) is DATA_LOSS.
//
// Quantization (per output feature n, over the weight in the compute dtype, as transformers
// materializes it before calling quant_weights):
//   m = max_k |w[n, k]| in float32 (NaN elements ignored, like std::max)
//   s = m · (1/128) in float32;  weight_scales[n] = fp16(s)
//   Q = clamp(round_half_away_from_zero(w / s), -128, 127), dividing by the float32 s (not the
//       fp16 one); a NaN quotient (an all-zero column gives 0/0) becomes 127, as EETQ's
//       std::min/std::max clamp leaves it. So an all-zero row stores Q = 127 with scale 0 and
//       dequantizes to exact zeros.
// quant_weights returns the scales in the weight's dtype (float32 for a float32 model); we store
// them as float16 always, the dtype EetqLinear declares and EETQ's GEMM reads.
//
// Forward: EETQ's fpA_intB GEMM converts Q to the activation dtype, multiplies by the scale in
// that dtype and accumulates in float32: the base class's dequantize + linear. There is no EETQ
// CPU kernel; transformers refuses to load EETQ without CUDA, while this module computes on any
// device its tensors are on (quantization itself always runs on the CPU, as EETQ's does).
// On the CPU the module repacks once at load (kernels::PackInt8Rowwise over Qᵀ and the
// float32 scales) and Forward runs that kernel, accumulating in float32 with the weight
// unrounded (EETQ rounds Q·scale to the activation dtype first); QS_KERNELS=ref turns it off.
// The packed copy holds the codes a second time (N·K bytes, counted in the footprint).

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

class EetqLinear final : public QuantizedLinear {
 public:
  // `prequantized`: register the serialized layout (see above).
  explicit EetqLinear(const models::LinearOptions& options, bool prequantized = false);

  // INVALID_ARGUMENT unless in_features and out_features are multiples of 64.
  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  // Forward is packed->Matmul(x) + bias where packed.
  const kernels::PackedWeight* DirectPackedWeight(c10::ScalarType) const override {
    return PackedWithoutBias();
  }
  const char* type_name() const override { return "EetqLinear"; }
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;
  absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> SerializedTensors()
      const override;

  at::Tensor weight;         // see above
  at::Tensor weight_scales;  // f16 [out]

 private:
  absl::Status PackForKernels(const LoadTarget& target);
};

// The quantization above on a float32 [out, in] weight: {Q int8 [in, out], scales f16 [out]}.
// Exposed for the edge-case tests.
std::pair<at::Tensor, at::Tensor> EetqQuantizeRef(const at::Tensor& weight);

}  // namespace quantserve::quant

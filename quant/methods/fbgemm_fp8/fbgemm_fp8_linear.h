#pragma once
// FbgemmFp8Linear: transformers' `FbgemmFp8Linear` (FP8 e4m3 weights per output row, FP8
// activations per token), with fbgemm-gpu's arithmetic reproduced in ATen on any device.
//
// State, under the names and shapes of the serialized layout:
//   weight        float8_e4m3fn [out, in]
//   weight_scale  float32 [out, 1]     W[n, k] = float(weight[n, k]) · weight_scale[n]
//   bias          float32 [out]        (FbgemmFp8Linear declares it float32; kept on load)
// `input_scale_ub` is a non-persistent buffer in transformers (filled from the config, never in
// a checkpoint); here it is the float `activation_scale_ub()`.
//
// Row quantization: `torch.ops.fbgemm.quantize_fp8_per_row`, the CUDA op transformers calls on
// NVIDIA GPUs (fbgemm_gpu/experimental/gen_ai/src/quantize/quantize.cu, every version from
// dynamicQuantizeMatrixRowwise to fused_quantize_rowwise), on a bfloat16 input:
//   m = max_k |x[r, k]| in float32 (fmaxf: NaN elements ignored)
//   s = max(min(m, ub) / 448, 1 / (448 · 512))   float32, IEEE division; no ub for weights
//   q = e4m3(x / s), saturating to ±448, round to nearest even;  stored scale = s
// So an all-zero row gets s = 1/229376 and q = 0 (no NaN). NOTE: the XPU path (Triton
// `quantize_fp8_row` from kernels-community/fp8-fbgemm) differs: a = 448 / clamp(m, 1e-12, ub),
// q = e4m3(clamp(x · a, ±448)), scale = 1 / a. We follow the CUDA op, the one fbgemm-gpu ships.
//
// Forward (FbgemmFp8Linear.forward): x is cast to bfloat16 (transformers always loads this
// method in bfloat16, so this is the identity there), quantized per token with ub =
// activation_scale_ub, then `f8f8bf16_rowwise`: acc = Σ_k xq·wq in float32, y = bf16((acc ·
// w_scale[n]) · x_scale[m]) (its CUTLASS epilogue order); then + bias and the result is cast to
// x's dtype. The GPU kernel accumulates with use_fast_accum=True (H100 FP8 tensor cores), which
// no CPU reproduces bit for bit: outputs agree to accumulation rounding.
//
// Weights are quantized on the CPU from the checkpoint weight cast to bfloat16 (transformers
// materializes it in the model dtype before quantizing), then moved to `target.device`.
//
// Pre-quantized (`prequantized`): weight is registered as float8_e4m3fn [out, in] and
// weight_scale as a plain parameter, exactly FbgemmFp8Linear's state dict (what save_pretrained
// writes); the loader's shape/dtype check names a wrong tensor. FinishSerializedLoad rejects
// contents quantize_fp8_per_row never writes (DATA_LOSS naming the tensor): a NaN weight code
// or a weight_scale that is not finite and positive (its minimum is 1/229376).

#include <ATen/core/Tensor.h>

#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

struct FbgemmFp8LinearOptions {
  models::LinearOptions linear;       // in/out features, bias, compute dtype (bfloat16)
  double activation_scale_ub = 1200;  // FbgemmFp8Config.activation_scale_ub
  bool prequantized = false;          // register the serialized layout (see above)
};

class FbgemmFp8Linear final : public QuantizedLinear {
 public:
  explicit FbgemmFp8Linear(const FbgemmFp8LinearOptions& options);

  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  at::Tensor Forward(const at::Tensor& x) const override;
  std::string kernel_name() const override { return "gemm_w8a8_fp8_rowwise_ref"; }
  const char* type_name() const override { return "FbgemmFp8Linear"; }
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;

  float activation_scale_ub() const { return activation_scale_ub_; }

  at::Tensor weight;        // float8_e4m3fn [out, in]
  at::Tensor weight_scale;  // float32 [out, 1]

 private:
  float activation_scale_ub_;
};

// quantize_fp8_per_row on the rows of a 2-D tensor (any float dtype; the values are taken as
// they are, so cast to bfloat16 first to match the op), with an optional upper bound.
// Returns {q float8_e4m3fn [rows, cols], scale float32 [rows]}.
std::pair<at::Tensor, at::Tensor> QuantizeFp8PerRowRef(const at::Tensor& x,
                                                       std::optional<float> scale_ub);

}  // namespace quantserve::quant

#pragma once
// AwqLinear: a Linear loaded from a pre-quantized AWQ checkpoint (AutoAWQ's WQLinear_GEMM /
// WQLinear_GEMV layouts, which transformers 5.23 loads through gptqmodel). AWQ cannot be
// quantized at load (calibration), so this module only exists on the pre-quantized path.
//
// Serialized layout (K = in_features, N = out_features, G = group_size, 4-bit only):
//   gemm  qweight int32 [K, N/8]   nibble i of word [k, c] = column 8c + kAwqOrder[i],
//                                  kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7}
//         qzeros  int32 [K/G, N/8] same interleave; zeros stored as is (no minus one)
//         scales  f16   [K/G, N]
//   gemv  qweight int32 [N, K/8]   nibble i of word [n, c] = input column 8c + i
//         qzeros  int32 [N, Wz]    Wz = ceil(ceil(K/G) / 8) rounded up to a multiple of
//                                  m = 1 (G >= 128), 2 (G = 64), 4 (G = 32); nibble i of word
//                                  [n, c] = group 8c + i; the padding past K/G groups is zero
//         scales  f16   [N, 8 Wz]  columns past K/G are zero
//   bias    f16   [N] (both)
// A wrong shape or dtype is INVALID_ARGUMENT naming the tensor; a padding nibble or scale that
// is not zero, or a scale that is not finite, is DATA_LOSS naming the tensor and the value.
//
// FinishSerializedLoad unpacks once into codes int8 [K, N], zeros int8 [K/G, N] and scales
// f16 [K/G, N] (the packed tensors stay registered: SaveModel writes them back byte for byte).
// Dequantize is AutoAWQ's dequantize_gemm: Wᵀ[k, n] = (q[k, n] - z[k/G, n]) · s[k/G, n],
// the int difference times the fp16 scale, in fp16. Forward is WQLinear_GEMM's naive torch
// path: x cast to fp16, x · Wᵀ, + bias in fp16 (gemv: bias added after the cast back, as
// WQLinear_GEMV), cast back to x's dtype. The product is accumulated in float32 and rounded to
// fp16 once, which is what ATen's CPU fp16 matmul does (in a different summation order: the
// outputs may differ by one fp16 ulp) at a fraction of its cost.
//
// Fast CPU path (a CPU load): the weight is also handed to kernels::PackLut4 (lut 0..15,
// scale = s, offset = -z·s per group), whose float32 accumulation replaces the fp32 matmul
// above; the weight is then (q - z)·s in float32, not rounded to fp16 first (a relative
// difference up to 2^-11 per weight). The unpacked codes are dropped then; Dequantize unpacks
// qweight again.

#include <ATen/core/Tensor.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

enum class AwqPacking { kGemm, kGemv };

struct AwqLinearOptions {
  AwqPacking packing = AwqPacking::kGemm;
  // Input columns per scale/zero group; -1 means in_features (AutoAWQ's convention).
  int64_t group_size = 128;
};

class AwqLinear final : public QuantizedLinear {
 public:
  // INVALID_ARGUMENT when the shape cannot be packed: K % G != 0, N % 8 != 0 (and K % 8 != 0
  // for gemv), or a gemv group size AutoAWQ has no zeros width for (not >= 128, 64 or 32).
  static absl::StatusOr<std::shared_ptr<AwqLinear>> Create(const models::LinearOptions& options,
                                                          const AwqLinearOptions& awq);

  // AWQ cannot quantize at load: always FAILED_PRECONDITION.
  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  // [out, in] in fp16 (the scales dtype), as the library's dequantize.
  at::Tensor Dequantize() const override;
  at::Tensor Forward(const at::Tensor& x) const override;
  const char* type_name() const override { return "AwqLinear"; }
  std::string kernel_name() const override;

  absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                    const at::Tensor& value, const LoadTarget& target) override;
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;

  // "awq gemm 4-bit, group_size 128" (for messages).
  std::string LayoutName() const;

  // The serialized tensors (see above).
  at::Tensor qweight;
  at::Tensor qzeros;
  at::Tensor scales;

 private:
  AwqLinear(const models::LinearOptions& options, const AwqLinearOptions& awq, int64_t group);

  // Wᵀ [K, N] in fp16.
  at::Tensor DequantizeKn() const;
  // The codes int8 [K, N] unpacked from qweight (on the CPU).
  at::Tensor UnpackCodes() const;
  // Installs the Lut4 kernel (see above) from the unpacked state.
  absl::Status PackForCpu(const std::string& name, const c10::Device& device);

  AwqLinearOptions awq_;
  int64_t group_;   // effective group size
  int64_t groups_;  // K / group_
  int64_t zeros_width_ = 0;  // gemv Wz
  // Unpacked at FinishSerializedLoad.
  at::Tensor codes_;       // int8 [K, N]; released once the packed kernel holds the weight
  at::Tensor zeros_;       // int8 [K/G, N]
  at::Tensor scales_kn_;   // f16 [K/G, N]
};

// AutoAWQ's calculate_zeros_width (gemv): the int32 words per output row holding the zeros;
// -1 for a group size it has none for.
int64_t AwqGemvZerosWidth(int64_t in_features, int64_t group_size);

}  // namespace quantserve::quant

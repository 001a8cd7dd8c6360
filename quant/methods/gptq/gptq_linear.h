#pragma once
// GptqLinear: a Linear loaded from a GPTQ checkpoint (GPTQModel / AutoGPTQ layout), computing
// what GPTQModel's CPU TorchQuantLinear computes.
//
// Serialized state (K = in_features, N = out_features, b = bits, G = ceil(K / group_size),
// group_size -1 meaning K), registered with these exact meta shapes:
//   qweight  int32 [K·b/32, N]   codes packed along K
//   qzeros   int32 [G, N·b/32]   zero points packed along N
//   scales   f16   [G, N]
//   g_idx    int32 [K]           group of each input row; optional (default k / group_size)
//   bias     f16   [N]           when the Linear has one
// Packing (all bit widths): each run of 32 values is a little-endian bitstream over b words,
// value i at bits b·i .. b·i+b-1 (so 3-bit value 10 straddles words 0 and 1).
// Zero points: checkpoint_format "gptq_v2" stores them raw; "gptq" (v1) stores z - 1, which
// GPTQModel undoes on load by adding 0x55555555 / 0x11111111 / 0x01010101 to every packed
// int32 word (2/4/8-bit, carries included: a v1 asym export wrote the matching word
// subtraction) and field-wise (z + 1) & 7 for 3-bit. We do the same.
//
// FinishSerializedLoad validates g_idx (DATA_LOSS naming the tensor and the bad value) and
// unpacks codes and zeros once; the packed tensors are kept as loaded, so SaveModel writes
// the checkpoint's own bytes back (same format).
//
// Fast CPU path (4-bit on a CPU load): the weight is also handed to kernels::PackLut4 as
// lut 0..15, scale = scales[g, n], offset = -z·scale, so the forward reads 4-bit codes and
// computes (q - z)·scale in float32 (not rounded to fp16 as Dequantize does: a relative
// difference up to 2^-11 per weight). Act-order g_idx becomes the kernel's input permutation
// (stable argsort of g_idx); a g_idx whose groups do not each hold exactly group_size rows,
// or a K that group_size does not divide, keeps the reference path, as do 2/3/8-bit. With
// the kernel installed the unpacked codes are dropped; Dequantize unpacks qweight again.
//
// Dequantize (PackableQuantLinear.dequantize_weight): W[n, k] = scales[g[k], n] ·
// (q[k, n] - z[g[k], n]) with the difference in integers and the product rounded to fp16
// (the scales' dtype), then converted to the compute dtype; Forward = x @ Wᵀ (+ bias).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

struct GptqLinearOptions {
  int64_t bits = 4;         // 2, 3, 4 or 8
  int64_t group_size = 128;  // > 0, or -1 for one group over all of K
  bool sym = true;          // informational: zeros come from the checkpoint either way
  bool desc_act = false;    // act-order: g_idx is a permutation-derived group map
  bool v1_zeros = true;     // checkpoint_format "gptq" (stored zero = z - 1)
};

class GptqLinear final : public QuantizedLinear {
 public:
  // Registers the serialized layout above on the meta device. INVALID_ARGUMENT when the
  // module's shape cannot be packed (K or N not a multiple of 32/b, or of 32 for 3-bit).
  static absl::StatusOr<std::shared_ptr<GptqLinear>> Create(const models::LinearOptions& linear,
                                                            const GptqLinearOptions& options);

  // GPTQ needs calibration: FAILED_PRECONDITION (the quantizer refuses earlier).
  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                    const at::Tensor& value, const LoadTarget& target) override;
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;
  absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> SerializedTensors()
      const override;
  at::Tensor Dequantize() const override;
  // Forward is packed->Matmul(x) + bias where packed.
  const kernels::PackedWeight* DirectPackedWeight(c10::ScalarType) const override {
    return PackedWithoutBias();
  }
  std::string kernel_name() const override;
  const char* type_name() const override { return "GptqLinear"; }

  int64_t groups() const { return groups_; }

  at::Tensor qweight;
  at::Tensor qzeros;
  at::Tensor scales;
  at::Tensor g_idx;

 private:
  GptqLinear(const models::LinearOptions& linear, const GptqLinearOptions& options);
  std::string What() const;
  // Installs the Lut4 kernel when this module's layout fits it (see above); `g` is the group
  // of each input row, int64 [K] on the CPU.
  absl::Status PackForCpu(const std::string& name, const at::Tensor& g, const c10::Device& device);
  // codes_, or qweight unpacked again when the packed kernel replaced it.
  at::Tensor Codes() const;

  GptqLinearOptions gptq_;
  int64_t groups_ = 0;
  bool has_g_idx_ = false;
  // Unpacked at load: codes [K, N] and true zeros [G, N] (int16), g_idx as int64 [K]. codes_
  // is released once the packed kernel holds the weight.
  at::Tensor codes_;
  at::Tensor zeros_;
  at::Tensor groups_of_rows_;
};

// Unpacks `packed` int32 [R·b/32, C] (bitstream along dim 0) into int16 [R, C]; `rows` = R.
at::Tensor GptqUnpackRows(const at::Tensor& packed, int64_t bits, int64_t rows);
// The inverse: int [R, C] values in [0, 2^b) -> int32 [R·b/32, C].
at::Tensor GptqPackRows(const at::Tensor& values, int64_t bits);
// v1 stored zeros (packed along N, int32 [G, N·b/32]) -> v2 (true) zeros, as GPTQModel's
// convert_gptq_v1_to_v2_format_module.
at::Tensor GptqV1ToV2Zeros(const at::Tensor& qzeros, int64_t bits, int64_t out_features);

}  // namespace quantserve::quant

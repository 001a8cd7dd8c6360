#pragma once
// AqlmLinear: one Linear of a pre-quantized AQLM checkpoint, as aqlm's QuantizedLinear
// (aqlm 1.1.7, aqlm/inference.py) holds and runs it on the CPU.
//
// Serialized layout per module P (Go = out_group_size, Gi = in_group_size, C = num_codebooks,
// S = 2^nbits_per_codebook; aqlm's QuantizedLinear parameters):
//   P.codes      int8 (nbits <= 8) / int16 (<= 16) / int32 (<= 32)   [N/Go, K/Gi, C]
//   P.codebooks  compute dtype                                        [C, S, Go, Gi]
//   P.scales     compute dtype                                        [N/Go, 1, 1, 1]
//   P.bias       compute dtype                                        [N]  (when the Linear has one)
// Codes are unsigned indices in a signed container (aqlm.utils.pack_int_data subtracts S
// from values >= S/2); the index is code mod S (unpack_int_data).
//
// Dequantize (aqlm.utils._dequantize_weight): the [Go, Gi] tile (o, i) is
//   scales[o] * sum_c codebooks[c, idx[o, i, c]]
// summed by embedding_bag in codebook order, and W[o*Go + r, i*Gi + s] = tile(o, i)[r, s].
// Forward is aqlm's generic CPU kernel (dequantize_gemm): that weight, then F.linear.
//
// Memory: the loaded codes, codebooks and scales are kept as they are on disk (SaveModel writes
// them back unchanged), plus the decoded indices made once at load: int32
// [N/Go * K/Gi * C] (row-major [N/Go, K/Gi, C]) with each codebook's offset c*S added (what
// embedding_bag reads). No float
// weight is kept; every forward dequantizes, as aqlm's CPU path does.
// memory_footprint_bytes() counts all four tensors.
//
// FinishSerializedLoad: DATA_LOSS "codes beyond codebook" for a code that no S-entry codebook
// index packs to (outside [-S/2, S), possible only when nbits is smaller than the container),
// DATA_LOSS for non-finite codebooks or scales.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/methods/aqlm/aqlm_config.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

class AqlmLinear final : public QuantizedLinear {
 public:
  // The module for a pre-quantized checkpoint, its layout registered on the meta device.
  // INVALID_ARGUMENT when the config's sizes are not positive, nbits_per_codebook is above
  // 32, or in_features / out_features are not multiples of in_group_size / out_group_size
  // (aqlm asserts the same).
  static absl::StatusOr<std::shared_ptr<AqlmLinear>> Create(const std::string& name,
                                                            const models::LinearOptions& linear,
                                                            const AqlmConfig& config);

  // AQLM codebooks are learned offline (requires_calibration): FAILED_PRECONDITION.
  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  // Forward is packed->Matmul(x) + bias where packed.
  const kernels::PackedWeight* DirectPackedWeight(c10::ScalarType) const override {
    return PackedWithoutBias();
  }
  std::string kernel_name() const override { return "aqlm_dequantize_gemm"; }
  const char* type_name() const override { return "AqlmLinear"; }

  absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                    const at::Tensor& value, const LoadTarget& target) override;
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;

  // "aqlm 1x16 (in_group_size 8, out_group_size 1)": the layout named in messages.
  std::string LayoutName() const;
  // aqlm.utils.get_int_dtype: the codes container for `nbits`.
  static c10::ScalarType CodesDtype(int64_t nbits);

  at::Tensor codes;
  at::Tensor codebooks;
  at::Tensor scales;

 private:
  AqlmLinear(const models::LinearOptions& linear, const AqlmConfig& config);

  AqlmConfig config_;
  at::Tensor indices_;  // int32 [N/Go * K/Gi * C], offsets added; set by FinishSerializedLoad
};

}  // namespace quantserve::quant

#pragma once
// HqqLinear: hqq 0.2.8's HQQLinear (hqq/core/quantize.py) for one converted nn.Linear.
//
// State, registered under the names of HQQLinear.state_dict() (what a saved HQQ checkpoint
// holds, prefix "<module>."):
//   W_q          packed codes (HqqPack), on the load device; uint8, int32 for 3-bit, or the
//                compute dtype when view_as_float
//   scale, zero  [R, 1] (axis 1) / [1, R] (axis 0), compute dtype, on the load device:
//                W = (codes - zero) * scale per group
//   bias         [out] compute dtype (a checkpoint parameter, when the Linear has one)
//   metadata     hqq's encoded scalars and strings, on the CPU like hqq's state_dict makes
//                them: nbits (int32, or float32 when the config gave a float), group_size,
//                axis (int32), shape (int64 [2]), packing / unpack_view_dtype / compute_dtype
//                (uint8 character codes), view_as_float, quant_scale, quant_zero, offload_meta,
//                encoded_state_dict, stores_quant_config and the weight_quant_params flags
//                channel_wise / optimize / round_zero / bitpack the config spelled out (uint8).
// Quantizing at load, every one but bias is derived (absent from an unquantized checkpoint).
// The float checkpoint weight arrives through the `weight` slot (a float [out, in] meta tensor
// on the skeleton); QuantizeWeight makes it an alias of W_q, so the loader sees it loaded and
// counts the bytes once. hqq's layout has no `weight`: SerializedTensors leaves it out.
//
// Pre-quantized (a checkpoint written by save_pretrained of a model with HQQLinear modules):
// the module registers exactly those tensors as plain parameters, no `weight`. Their expected
// shapes/dtypes follow from the config and the Linear's shape; W_q stored viewed as float may
// come in any float dtype whose bytes make the packed codes (hqq re-views it through
// unpack_view_dtype). FinishSerializedLoad decodes the metadata as hqq's load_state_dict does
// and checks it against the config (DATA_LOSS naming the tensor when, e.g., nbits or packing
// says otherwise): the metadata decides how W_q is unpacked, so it must agree with the shapes
// the config gave. compute_dtype may name another float dtype (scale/zero are converted to the
// load's dtype, and the saved metadata says so).
//
// QuantizeWeight is Quantizer.quantize with HQQLinear(device="cpu"): float32 min/max, inverse
// scale, the legacy proximal zero-point solver (optimize_weights_proximal_legacy) and planar
// packing, with the same ATen ops in the same order so the state matches bit for bit. For a
// CUDA load the result is moved to the device; hqq with device="cuda" would instead run the
// solver in float16 there, which this does not reproduce.
// Forward is hqq's default PYTORCH backend: matmul(x, Dequantize().t()) (+ bias).
//
// Fast CPU path: a 4-bit, axis-1 module whose group size divides in_features (each group a
// run of one output row) on a CPU load also hands its weight to kernels::PackLut4 (lut
// 0..15, scale, offset = -zero·scale, all float32), at the end of QuantizeWeight and of
// FinishSerializedLoad, and the forward runs that kernel: (q - zero)·scale is then evaluated
// as q·scale + offset in float32 instead of in the compute dtype (a few float32 ulps per
// weight; for bfloat16 the weight is no longer rounded to bfloat16). W_q stays (it is the
// serialized state), so the packed copy adds to the footprint. Other bit widths and axis 0
// (groups strided across the weight) keep the reference path.

#include <ATen/core/Tensor.h>

#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/methods/hqq/hqq_bitpack.h"
#include "quant/methods/hqq/hqq_config.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

// Where the groups of an [N, K] weight lie for one set of params.
struct HqqLayout {
  int64_t group_size = 0;            // G after HQQLinear's None -> K (axis 1) / N (axis 0)
  int64_t groups = 0;                // R = N*K/G
  int64_t grouped_rows = 0;          // rows of the grouped matrix: R (axis 1) or G (axis 0)
  int64_t grouped_cols = 0;          // G (axis 1) or R (axis 0)
  std::vector<int64_t> w_q_shape;    // packed (and float-viewed) W_q
  std::vector<int64_t> scale_shape;  // [R, 1] or [1, R]
  const HqqPacking* packing = nullptr;

  // INVALID_ARGUMENT when hqq cannot quantize an [N, K] weight with `params`: N*K not a
  // multiple of the group size (hqq asserts), grouped rows not a multiple of the codes per
  // byte (hqq would mis-pack), or W_q bytes not a whole number of compute-dtype elements for
  // view_as_float (torch's view fails).
  static absl::StatusOr<HqqLayout> Create(int64_t out_features, int64_t in_features,
                                          const HqqWeightQuantParams& params,
                                          c10::ScalarType compute_dtype);
};

class HqqLinear final : public QuantizedLinear {
 public:
  // `linear.dtype` is the compute dtype; `prequantized`: register the serialized layout (see
  // above). INVALID_ARGUMENT as HqqLayout::Create.
  static absl::StatusOr<std::shared_ptr<HqqLinear>> Create(const models::LinearOptions& linear,
                                                           const HqqWeightQuantParams& params,
                                                           bool prequantized = false);

  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  // Forward is packed->Matmul(x) + bias where packed.
  const kernels::PackedWeight* DirectPackedWeight(c10::ScalarType) const override {
    return PackedWithoutBias();
  }
  at::Tensor Forward(const at::Tensor& x) const override;
  const char* type_name() const override { return "HQQLinear"; }

  absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                    const at::Tensor& value, const LoadTarget& target) override;
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;
  absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> SerializedTensors()
      const override;

  const HqqWeightQuantParams& params() const { return params_; }
  const HqqLayout& layout() const { return layout_; }

  at::Tensor weight;  // "weight": the float input slot, aliases w_q once quantized (not
                      // registered when pre-quantized)
  at::Tensor w_q;     // "W_q"
  at::Tensor scale;   // "scale"
  at::Tensor zero;    // "zero"

 private:
  HqqLinear(const models::LinearOptions& linear, const HqqWeightQuantParams& params,
            HqqLayout layout, bool prequantized);
  // "hqq 4-bit, group_size 64, axis 1" (for messages).
  std::string Describe() const;
  // Installs the Lut4 kernel when this module's layout fits it (see above).
  absl::Status PackForCpu(const c10::Device& device);

  // hqq's encoded metadata, name -> 0-d / 1-d CPU tensor (a deque keeps registered pointers).
  std::deque<std::pair<std::string, at::Tensor>> metadata_;

  HqqWeightQuantParams params_;
  HqqLayout layout_;
};

}  // namespace quantserve::quant

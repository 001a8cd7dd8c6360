#pragma once
// The Linear modules torchao 0.18's quantize_ leaves behind, as quantserve modules.
//
// State is registered under the names torchao >= 0.15 flattens a tensor subclass into for
// safetensors (flatten_tensor_state_dict): "<module>._weight_qdata", "._weight_scale",
// "._weight_zero_point". `weight` is the slot the float checkpoint weight streams into; after
// QuantizeWeight it holds the very tensor `_weight_qdata` holds (same storage), so every
// footprint, which dedups by data pointer, counts it once.
//
//   TorchAoInt4Linear  Int4Tensor (Int4WeightOnlyConfig, packing "plain"): qdata int8 [N, K/2]
//                      (two signed 4-bit codes per byte, even k in the low nibble), scale and
//                      zero_point [K/G, N] in the weight dtype; W = q * scale + zero_point.
//   TorchAoInt8Linear  Int8Tensor (Int8WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig):
//                      qdata int8 [N, K], scale float32 and zero_point int8 (zeros: weights are
//                      symmetric) of [N / block_rows, K / block_cols]; W = (q - zp) * scale.
//
// Fast CPU kernels (quant/kernels): on the CPU, Int4 modules and weight-only Int8 modules with
// one scale per row (or tensor) repack once at load (PackLut4 with lut 0..15, scale and
// offset = zero_point - 8 * scale; PackInt8Rowwise) and the forward runs that kernel,
// accumulating in float32 (torchao's per-row int8 path rounds x @ q^T to the activation dtype
// before scaling). QS_KERNELS=ref turns packing off.
//
// The formulas below reproduce torchao's CPU arithmetic op for op (see each comment); the
// `torchao` namespace exposes them so tests can check edge cases directly.

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/methods/torchao/torchao_config.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {
namespace torchao {

struct QuantizedState {
  at::Tensor qdata;
  at::Tensor scale;
  at::Tensor zero_point;
};

// Int4Tensor.from_hp: mslk's int4_row_quantize_zp + pack_int4 on `weight` [N, K] (any float
// dtype; computed in float32, scale/zero_point cast back to weight's dtype afterwards).
// INVALID_ARGUMENT when K is odd or not a multiple of group_size.
absl::StatusOr<QuantizedState> QuantizeInt4Plain(const at::Tensor& weight, int64_t group_size);
// The signed codes [N, K] (int8 in [-8, 7]) of a packed Int4Tensor qdata [N, K/2].
at::Tensor UnpackInt4(const at::Tensor& qdata);
// The inverse: int8 [N, K] codes in [-8, 7] -> int8 [N, K / 2] (even k in the low nibble).
at::Tensor PackInt4(const at::Tensor& q);
// q * scale + zero_point per group, in float32, rounded once to `dtype`. torchao has no CPU
// dequantize for Int4Tensor (its matmul is CUDA-only mslk), so this is quantserve's choice.
at::Tensor DequantizeInt4Plain(const QuantizedState& state, int64_t group_size,
                               c10::ScalarType dtype);

// Int8Tensor.from_hp on a 2-D `x` [R, C] with blocks of [block_rows, block_cols] sharing one
// scale: choose_qparams_affine (SYMMETRIC: scale = amax / 127.5; ASYMMETRIC: (max - min) / 255
// and an integer zero point; both in x's dtype, clamped at float32 eps, stored as float32)
// then quantize_affine (round(x * (1 / scale)) + zp, clamped). `reduce_range` halves the range.
absl::StatusOr<QuantizedState> QuantizeInt8(const at::Tensor& x, int64_t block_rows,
                                            int64_t block_cols, bool symmetric, bool reduce_range);
// dequantize_affine: (q - zp) * scale in `dtype` (float32 when it meets the float32 scale).
at::Tensor DequantizeInt8(const QuantizedState& state, c10::ScalarType dtype);

// Exact int32 a [M, K] @ b [K, N] of int8 matrices: torch._int_mm where torchao uses it.
at::Tensor IntMm(const at::Tensor& a, const at::Tensor& b);
// The oracle: the same product accumulated in float64 (exact for K < 2^37).
at::Tensor IntMmRef(const at::Tensor& a, const at::Tensor& b);

}  // namespace torchao

// What the two module kinds share: the state under torchao's flattened names and, for a
// pre-quantized checkpoint (LoadTarget::checkpoint_is_prequantized), its loading.
//
// Pre-quantized, the module registers "_weight_qdata", "_weight_scale", "_weight_zero_point"
// and torchao 0.14's spellings "weight:qdata", "weight:scale", "weight:zero_point" for the
// same tensors, all optional for the loader; FinishSerializedLoad then requires one spelling
// of each required tensor (INVALID_ARGUMENT naming the missing one), drops the unused names
// and checks contents (DATA_LOSS naming the tensor). There is no float `weight` slot; `weight`
// is set to the qdata tensor afterwards, unregistered. SerializedTensors always writes the
// >= 0.15 names (what transformers 5.23 + torchao 0.18 write), never `weight`.
class TorchAoLinearBase : public QuantizedLinear {
 public:
  absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                    const at::Tensor& value, const LoadTarget& target) override;
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;
  absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> SerializedTensors()
      const override;

  // The torchao tensor subclass and its metadata JSON object as torchao's
  // TensorSubclassAttributeJSONEncoder writes it into the safetensors header.
  virtual const char* subclass_name() const = 0;
  virtual nlohmann::ordered_json MetadataJson() const = 0;

  at::Tensor weight;  // float [N, K] on the skeleton; then the same tensor as _weight_qdata
  at::Tensor weight_qdata;
  at::Tensor weight_scale;
  at::Tensor weight_zero_point;

 protected:
  TorchAoLinearBase(const models::LinearOptions& options, bool prequantized);
  // Registers the state with its meta shapes (set by the subclass before calling).
  void RegisterState();
  // Subclass checks of the loaded contents; `name` is the module's dotted name.
  virtual absl::Status CheckContents(const std::string& name) const = 0;
  // Int8Tensor's zero_point is optional in a checkpoint (zeros); Int4Tensor's is required.
  virtual bool zero_point_required() const = 0;
  // Installs the packed CPU kernel where one fits (end of QuantizeWeight and of
  // FinishSerializedLoad). Default: none.
  virtual absl::Status PackForKernels(const LoadTarget& target) { return absl::OkStatus(); }

  bool prequantized_;
};

class TorchAoInt4Linear final : public TorchAoLinearBase {
 public:
  TorchAoInt4Linear(const models::LinearOptions& options, const TorchAoSchemeConfig& config,
                    bool prequantized = false);

  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  const char* type_name() const override { return "TorchAoInt4Linear"; }
  const char* subclass_name() const override { return "Int4Tensor"; }
  nlohmann::ordered_json MetadataJson() const override;

 protected:
  absl::Status CheckContents(const std::string& name) const override;
  bool zero_point_required() const override { return true; }
  absl::Status PackForKernels(const LoadTarget& target) override;

 private:
  int64_t group_size_;
};

class TorchAoInt8Linear final : public TorchAoLinearBase {
 public:
  TorchAoInt8Linear(const models::LinearOptions& options, const TorchAoSchemeConfig& config,
                    bool prequantized = false);

  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  // torchao's Int8Tensor linear on CPU: weight-only per row/tensor = mm(x, q^T) * scale;
  // weight-only per group = mm(x, dequantize()^T); dynamic = per-token int8 activations,
  // torch._int_mm, * x_scale, * w_scale (with the zero-point correction when ASYMMETRIC).
  at::Tensor Forward(const at::Tensor& x) const override;
  std::string kernel_name() const override;
  const char* type_name() const override { return "TorchAoInt8Linear"; }
  const char* subclass_name() const override { return "Int8Tensor"; }
  nlohmann::ordered_json MetadataJson() const override;

 protected:
  absl::Status CheckContents(const std::string& name) const override;
  bool zero_point_required() const override { return false; }
  absl::Status PackForKernels(const LoadTarget& target) override;

 private:
  TorchAoSchemeConfig config_;
  int64_t block_rows_;
  int64_t block_cols_;
};

// json.dumps(obj) with Python's default separators (", ", ": ") and ensure_ascii: how torchao
// and transformers write the safetensors metadata strings.
std::string PythonJsonDumps(const nlohmann::ordered_json& j);

}  // namespace quantserve::quant

#pragma once
// CompressedTensorsLinear: one Linear of a compressed-tensors checkpoint (llm-compressor
// output), loaded as transformers 5.23 + compressed-tensors 0.20 run it on CPU.
//
// Serialized layout per module P (compressors/pack_quantized, compressors/naive_quantized):
//   pack-quantized      P.weight_packed int32 [N, ceil(K*b/32)] (dense little-endian bit
//                       stream per row, values stored with a +2^(b-1) offset), P.weight_shape
//                       int64 (or int32) [2] = [N, K], P.weight_scale, P.weight_zero_point
//                       (asymmetric: group/channel int32 packed along N, tensor zp_dtype [1])
//   int-/float-/naive-quantized
//                       P.weight int8 (int16/int32 above 8 bits) or float8_e4m3fn [N, K],
//                       P.weight_scale, P.weight_zero_point (asymmetric, zp_dtype)
//   static input activations: P.input_scale [1] (+ P.input_zero_point when asymmetric)
// weight_scale has the strategy's shape (tensor [1], channel [N, 1], group [N, K/G], block
// [ceil(N/bh), ceil(K/bw)]) in the compute dtype.
//
// FinishSerializedLoad checks weight_shape and code / zero-point ranges (DATA_LOSS naming the
// tensor) and unpacks the codes once. Dequantize() is the library's decompress
// ((q - zp) * scale in the scale dtype); Forward fake-quantizes the input as
// compressed-tensors' quantized forward does (dynamic per-token / per-tensor / per-group
// min-max, or the static input_scale), unless the `dequantize` loading attribute is set
// (transformers then loads a dense model and runs no activation quantization).
//
// Fast CPU path, for weight-only modules (no input activations, or `dequantize`) on a CPU
// load: int4 weights (any strategy but block) go to kernels::PackLut4 with the signed codes
// shifted into 0..15, lut 0..15 and offset = -(zp + 8)·scale; symmetric int8 channel/tensor
// weights go to kernels::PackInt8Rowwise. The kernels compute in float32, so (q - zp)·scale is
// no longer rounded to the scale dtype when that is 16-bit. Codes unpacked from
// weight_packed are dropped then (Dequantize unpacks them again). Activation-quantized
// schemes, float8, asymmetric int8 and other widths keep the reference path.

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "quant/methods/compressed_tensors/compressed_tensors_config.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

struct CompressedTensorsLinearOptions {
  // The module's scheme (its weights must be set).
  CompressedTensorsConfig::QuantizationScheme scheme;
  // "pack-quantized", "int-quantized", "float-quantized" or "naive-quantized" (the scheme's
  // format, or the one compressed-tensors infers for it).
  std::string format = "pack-quantized";
  // transformers' `dequantize` loading attribute: no activation fake-quantization.
  bool dequantize = false;
};

class CompressedTensorsLinear final : public QuantizedLinear {
 public:
  // The module for a pre-quantized checkpoint, its layout registered on the meta device.
  // UNIMPLEMENTED for schemes this build does not run (output activations, tensor_group,
  // FP4, static channel/group activations, ...), INVALID_ARGUMENT when the module's shape
  // does not fit the scheme (in_features not a multiple of group_size).
  static absl::StatusOr<std::shared_ptr<CompressedTensorsLinear>> Create(
      const std::string& name, const models::LinearOptions& linear,
      CompressedTensorsLinearOptions options);

  // compressed-tensors checkpoints are made offline (requires_calibration).
  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  at::Tensor Forward(const at::Tensor& x) const override;
  std::string kernel_name() const override;
  const char* type_name() const override { return "CompressedTensorsLinear"; }

  absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                    const at::Tensor& value, const LoadTarget& target) override;
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;

  const CompressedTensorsLinearOptions& ct_options() const { return ct_; }
  // The input activations after fake quantization (the identity without input activations
  // or with `dequantize`): the `_ref` of the activation path.
  at::Tensor QuantizeInput(const at::Tensor& x) const;

  // Serialized tensors (registered under these names when the layout has them).
  at::Tensor weight;  // int-/float-/naive-quantized codes
  at::Tensor weight_packed;
  at::Tensor weight_shape;
  at::Tensor weight_scale;
  at::Tensor weight_zero_point;
  at::Tensor input_scale;
  at::Tensor input_zero_point;

 private:
  CompressedTensorsLinear(const models::LinearOptions& linear, CompressedTensorsLinearOptions ct);
  // "compressed-tensors pack-quantized int4 group 128" for messages.
  std::string what() const;
  // Installs the fast kernel when the module fits one (see above).
  absl::Status PackForCpu(const std::string& name, const c10::Device& device);
  // codes_, or the codes unpacked again from weight_packed once the kernel replaced them.
  at::Tensor Codes() const;

  CompressedTensorsLinearOptions ct_;
  // After FinishSerializedLoad: codes [N, K] (int8..int32 or float8; released when a packed
  // kernel holds the weight and they were unpacked) and the zero points unpacked to the
  // scale's shape (undefined when symmetric).
  at::Tensor codes_;
  at::Tensor zero_;
};

}  // namespace quantserve::quant

#pragma once
// QuantoLinear: optimum-quanto 0.2.7's frozen QLinear, with its state under the names
// QLinear.state_dict() writes:
//
//   qtype      state                                                 quantization
//   int8       weight._data int8 [N, K], weight._scale [N, 1]        AbsmaxOptimizer (symmetric,
//   float8     weight._data float8_e4m3fn [N, K], weight._scale       per row): scale = absmax/qmax
//   int4/int2  weight._data._data uint8 packed [ceil(R/(8/b)), C],   MaxOptimizer (affine, per
//              weight._scale [R, 1], weight._shift [R, 1] (float)    group of G along K)
//   all        input_scale, output_scale 0-d; bias [N] when present
//
// with (R, C) = (N*K/G, G) when grouped, (N, K) per row. Scales and shifts are in the compute
// dtype. Group size: 128, minus 32 while K % G != 0 and G > 32; none (per row) when K <= 128
// or nothing divides. Packing (PackedTensor, planar along dim 0): packed[r] holds
// u[r + i*rows] << (b*i) for i < 8/b, rows = ceil(R/(8/b)).
//
// Every formula runs the same ATen ops in the same order as the library on the same dtypes,
// so the state is bit-identical to QLinear.freeze() on CPU. The float weight streams into
// `weight` (registered for the loader) and is dropped from the parameters once quantized.
//
// Forward mirrors quanto's CPU arithmetic per combination (tensor/weights/qbytes.py,
// library/qbytes_mm.py): 8-bit weights: x @ (scale * data)^T (bf16 int8: _weight_int8pack_mm);
// int4/int2: x @ dequantize()^T; with int8 activations and int8 weights: _int_mm of the
// quantized input and data, times input_scale*scale in float32; other activation cases
// dequantize the quantized input (or fold input_scale into the weight scale) and matmul.
// Output quantization is off after calibration, as optimum-quanto's streamline calibration
// leaves it for Llama (every QLinear output feeds view/add/silu/mul).
//
// Not mirrored: the kernels optimum-quanto swaps in by device and dtype. bfloat16 int4 with
// group 128 becomes a TinyGemm tensor even on CPU (_weight_int4pack_mm_for_cpu; its bf16
// scale/shift repacking is lossy, so its saved _shift differs too); on CUDA, fp16 int4 group
// 128 uses the AWQ GEMM and fp16/bf16 float8 the Marlin FP8 GEMM. Those cases run the generic
// arithmetic above, so they match optimum-quanto's values only up to float rounding.
//
// Fast CPU kernels (quant/kernels): weight-only int8 and int4 modules on the CPU repack once
// at load (PackInt8Rowwise / PackLut4 with lut 0..15, scale, offset = -shift) and Forward runs
// that kernel, accumulating in float32 (quanto's bf16 int8 kernel also accumulates in float32;
// its other paths round the dequantized weight to the compute dtype first). Activation-quantized,
// float8 and int2 modules keep the arithmetic above. QS_KERNELS=ref turns packing off.
//
// Thread-safety: Forward is const and safe to call concurrently, except between
// BeginCalibration and EndCalibration (one thread, before serving).

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

// One optimum-quanto qtype (tensor/qtype.py) as QLinear stores and uses it.
struct QuantoQType {
  const char* name;         // the QuantoConfig value: "int8", "float8", "int4", "int2"
  int bits;                 // 8 for int8/float8, else 4 or 2 (packed)
  bool is_floating_point;   // float8_e4m3fn
  c10::ScalarType storage;  // weight._data (activation data) dtype; packed uint8 below 8 bits
  // 8-bit: qtype.qmax (AbsmaxOptimizer) == dtype_info(dtype).max (activation absmax scale,
  // clamp bound): 127 or 448. Below 8 bits: the affine range 2^b - 1.
  int64_t qmax;
};

// The row for a QuantoConfig name, or null.
const QuantoQType* FindQuantoQType(const std::string& name);

struct QuantoLinearOptions {
  models::LinearOptions linear;              // shape, bias, compute dtype
  const QuantoQType* weights = nullptr;      // required
  const QuantoQType* activations = nullptr;  // null: weight-only; else int8 or float8
  // Loading optimum-quanto's own serialization: the state above is registered as the
  // checkpoint's tensors (no float `weight` slot); input/output scales in the compute dtype.
  bool prequantized = false;
};

class QuantoLinear final : public QuantizedLinear {
 public:
  // INVALID_ARGUMENT for a missing weights qtype, 4/2-bit activations or an empty shape.
  static absl::StatusOr<std::shared_ptr<QuantoLinear>> Create(const QuantoLinearOptions& options);

  // optimum-quanto's group size for int4/int2 weights with `in_features` columns; 0 = per row.
  static int64_t GroupSize(int64_t in_features);

  // INVALID_ARGUMENT where optimum-quanto would store NaN (a float8 row of zeros: 0/0) or
  // quantize along the wrong axis (a one-row int4/int2 weight without groups).
  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  // Forward is packed->Matmul(x) + bias where packed.
  const kernels::PackedWeight* DirectPackedWeight(c10::ScalarType) const override {
    return PackedWithoutBias();
  }
  at::Tensor Forward(const at::Tensor& x) const override;
  std::string kernel_name() const override;
  const char* type_name() const override { return "QLinear"; }
  // Pre-quantized: DATA_LOSS naming the tensor for a non-finite or negative scale, a
  // non-finite shift or a NaN float8 code (optimum-quanto never writes them).
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;

  const QuantoLinearOptions& quanto_options() const { return quanto_; }
  int64_t group_size() const { return group_size_; }

  // optimum-quanto's Calibration context (momentum 0.9, streamline): until EndCalibration,
  // each Forward first folds absmax(x)/qmax into input_scale (the first measurement replaces
  // the initial 1, later ones: 0.9*scale + 0.1*new), quantizes x with it, then does the same
  // for output_scale on the output; the first call also returns the output quantized and
  // dequantized (the streamline pass disables output quantization once the parent module has
  // run). Only for modules with activations.
  void BeginCalibration();
  void EndCalibration();

  at::Tensor weight;        // the float weight until QuantizeWeight (then unregistered)
  at::Tensor data;          // weight._data, or weight._data._data (packed) below 8 bits
  at::Tensor scale;         // weight._scale
  at::Tensor shift;         // weight._shift (int4/int2)
  at::Tensor input_scale;   // 0-d
  at::Tensor output_scale;  // 0-d

 private:
  explicit QuantoLinear(const QuantoLinearOptions& options);

  at::Tensor QuantizeActivation(const at::Tensor& x, const at::Tensor& scale) const;
  at::Tensor DequantizeActivation(const at::Tensor& q, const at::Tensor& scale) const;
  at::Tensor Matmul(const at::Tensor& x, const at::Tensor& in_scale) const;
  // Weight-only int8 (per row) and int4 on the CPU: installs the packed kernel (once at load).
  absl::Status PackForKernels(const LoadTarget& target);

  struct Calibration {
    at::Tensor input_scale;
    at::Tensor output_scale;
    bool quantize_output = true;
  };

  QuantoLinearOptions quanto_;
  int64_t group_size_ = 0;
  int64_t rows_ = 0;                          // R: quantization rows (groups) of the weight
  std::unique_ptr<Calibration> calibration_;  // set between Begin/EndCalibration
};

// optimum-quanto's pack_weights / unpack for b = 4 or 2: `u` [R, C] uint8 codes < 2^b.
at::Tensor QuantoPackWeights(const at::Tensor& u, int bits);
at::Tensor QuantoUnpackWeights(const at::Tensor& packed, int bits, int64_t rows);

}  // namespace quantserve::quant

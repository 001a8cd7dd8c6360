#pragma once
// bitsandbytes' two Linear modules, with bnb 0.50.2's CPU arithmetic reproduced in ATen ops
// (the same op sequence as its torch "default" backend, so the same LibTorch gives the same
// bits), and the kernels they are built from.
//
//   BnbLinear8bitLt  LLM.int8: `weight` int8 [N, K] (row-wise absmax codes of the fp16 weight),
//                    `SCB` f32 [N] (that absmax), `weight_format` u8 0-d (0 = "row").
//                    Forward quantizes the activations row-wise to int8 and runs the columns
//                    holding an |x| >= threshold outlier in float against the dequantized
//                    weight columns.
//   BnbLinear4bit    QLoRA FP4/NF4, blocksize 64: `weight` packed codes (two per byte, high
//                    nibble first, viewed as bnb_4bit_quant_storage, [(N*K+1)/2/itemsize, 1]),
//                    `weight.absmax` f32 [nb] (u8 with double quant), `weight.quant_map` f32
//                    [16], [`weight.nested_absmax` f32, `weight.nested_quant_map` f32 [256]],
//                    `weight.quant_state.bitsandbytes__<fp4|nf4>` (u8 bytes of bnb's JSON).
//                    Forward = dequantize to the compute dtype, then F.linear. On the CPU,
//                    when blocks line up with rows (in_features % blocksize == 0), the codes
//                    are repacked once at load (kernels::PackLut4: the NF4/FP4 table, the
//                    block absmax as group scale, double quant undone once) and Forward runs
//                    that kernel on x in the compute dtype: bnb rounds the dequantized weight
//                    to the compute dtype and accumulates as F.linear does, ours keeps the
//                    weight in float32 and accumulates in float32, output in the compute
//                    dtype. QS_KERNELS=ref turns packing off.
//
// These are the names bnb's state_dict() writes (and transformers' save_pretrained stores), so
// SaveModel writes them as they are. Built for a pre-quantized checkpoint, a module registers
// exactly that layout as checkpoint tensors (no float weight slot): 8-bit `weight_format` is
// optional (bnb reads a missing one as "row"); 4-bit shapes that depend on the blocksize are
// checked once the quant_state JSON (which carries it) has arrived, in FinishSerializedLoad.
// Modules are built on the meta device by the quantizer and filled by QuantizeWeight on the
// load thread; afterwards Forward/Dequantize only read them and may run concurrently.

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {

// ---- kernels (bnb 0.50.2 CPU semantics; every tensor argument on one device) ----
namespace bnb {

// int8_vectorwise_quant: row-wise absmax int8 codes of A [M, K] (fp16 in bnb).
// threshold > 0: entries with |a| >= threshold are left out of the row absmax (zeroed before
// it) and, when M > 1, their whole columns are zeroed in the codes. Returns
// (codes int8 [M, K], row absmax f32 [M], outlier column indices int64 (undefined when
// threshold <= 0)). A row of zeros gives 127/0 codes exactly as bnb does (NaN cast to int8).
std::tuple<at::Tensor, at::Tensor, at::Tensor> Int8VectorwiseQuant(const at::Tensor& a,
                                                                   double threshold);
// int8_vectorwise_dequant: codes * stats[:, None] * (1/127 as bnb writes it), float32.
at::Tensor Int8VectorwiseDequant(const at::Tensor& codes, const at::Tensor& stats);
// int8_scaled_mm: (CA @ CB^T) as exact int32, times SCA[m] * SCB[n] * 6.200124e-05, + bias,
// cast to `dtype`. bnb's CPU backend gets the int32 product from torch._int_mm (AVX-512) or a
// float32 matmul (exact while every partial sum stays below 2^24); we use float64 (exact for
// any K a model has).
at::Tensor Int8ScaledMm(const at::Tensor& ca, const at::Tensor& cb, const at::Tensor& sca,
                        const at::Tensor& scb, const at::Tensor& bias, c10::ScalarType dtype);
// MatMul8bitLt.forward in eval mode: LLM.int8 of x [..., K] (any float dtype; quantized
// through fp16) with weight codes `cb` [N, K] and `scb` [N]. Output in x's dtype.
at::Tensor Int8MixedMatmulRef(const at::Tensor& x, const at::Tensor& cb, const at::Tensor& scb,
                              const at::Tensor& bias, double threshold);

enum class FourBitType { kFp4, kNf4 };

// get_4bit_type(): the 16 code values (float32) indexed by 4-bit code (the `quant_map`).
at::Tensor FourBitCode(FourBitType type);
// The table bnb's CPU dequantize_4bit kernel uses instead of quant_map: the same values, but
// FP4 code 8 is -0.0 there (+0.0 in quant_map).
at::Tensor FourBitCpuLut(FourBitType type);
// create_dynamic_map(signed=True, max_exponent_bits=7): the 256-entry map for double quant.
at::Tensor DynamicMap();

// quantize_4bit (default backend): the flattened tensor in blocks of `blocksize`; codes by
// torch.bucketize against the float32 midpoints of the sorted code, packed two per byte.
// Returns (packed uint8 [(numel+1)/2, 1], absmax f32 [ceil(numel/blocksize)]).
std::tuple<at::Tensor, at::Tensor> Quantize4bit(const at::Tensor& w, int64_t blocksize,
                                                FourBitType type);
// dequantize_4bit: code[q] * absmax[block] in float32, cast to `dtype`, shaped `shape`
// (`code`: FourBitCpuLut to match bnb's CPU kernel bit for bit).
at::Tensor Dequantize4bit(const at::Tensor& packed_u8, const at::Tensor& absmax,
                          const at::Tensor& code, int64_t blocksize, at::IntArrayRef shape,
                          c10::ScalarType dtype);
// quantize_blockwise on CPU (libbitsandbytes_cpu quantize_cpu, float32 input): per-block
// absmax, then x / absmax mapped through a 65536-entry LUT of nearest `code` entries (the
// LUT, not an exact nearest search: this is what bnb's CPU double quant stores). Runs on the
// CPU whatever the inputs' device; returns CPU (codes uint8, absmax f32 [ceil(n/blocksize)]).
std::tuple<at::Tensor, at::Tensor> QuantizeBlockwiseCpu(const at::Tensor& a, const at::Tensor& code,
                                                        int64_t blocksize);
// dequantize_blockwise: code[q] * absmax[block], float32.
at::Tensor DequantizeBlockwise(const at::Tensor& q, const at::Tensor& absmax,
                               const at::Tensor& code, int64_t blocksize);

// The non-tensor 4-bit state bnb packs into `weight.quant_state.bitsandbytes__<type>`
// (QuantState.as_dict(packed=True): json.dumps of these keys, as uint8 bytes).
struct QuantStateJson {
  FourBitType quant_type = FourBitType::kFp4;
  int64_t blocksize = 64;
  c10::ScalarType dtype = c10::ScalarType::Float;  // the weight's dtype before quantization
  std::vector<int64_t> shape;                      // the weight's shape, [N, K]
  bool nested = false;                             // double quant: the nested_* keys below
  int64_t nested_blocksize = 256;
  c10::ScalarType nested_dtype = c10::ScalarType::Float;
  double nested_offset = 0;
};
// Parses those bytes. DATA_LOSS saying what is wrong (not JSON, a missing or mistyped key,
// a key bnb's QuantState.from_dict does not know); the caller names the tensor.
absl::StatusOr<QuantStateJson> ParseQuantStateJson(const at::Tensor& bytes);

// Python's repr() of a double (json.dumps writes floats with it): shortest round-trip digits,
// scientific outside 1e-4 <= |x| < 1e16.
std::string PythonFloatRepr(double value);

}  // namespace bnb

class BnbLinear8bitLt final : public QuantizedLinear {
 public:
  // `threshold`: llm_int8_threshold. `has_fp16_weights`: llm_int8_has_fp16_weight (then the
  // state is just the float `weight`, quantized at every forward). `prequantized`: the
  // checkpoint holds the int8 state (the quantizer's LoadTarget::checkpoint_is_prequantized).
  BnbLinear8bitLt(const models::LinearOptions& options, double threshold, bool has_fp16_weights,
                  bool prequantized = false);

  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  at::Tensor Dequantize() const override;
  at::Tensor Forward(const at::Tensor& x) const override;
  std::string kernel_name() const override { return "gemm_w8a8_llm_int8_ref"; }
  const char* type_name() const override { return "Linear8bitLt"; }

  // `weight` must be int8 [N, K] (a float weight next to an SCB is refused), `SCB` f32 [N],
  // `weight_format` u8 0-d equal to 0: the legacy col32/col_turing/col_ampere layouts (1-3)
  // are INVALID_ARGUMENT (bnb >= 0.45 refuses them too; transformers 5.23 ignores the key and
  // would read them as rows).
  absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                    const at::Tensor& value, const LoadTarget& target) override;
  // DATA_LOSS for an SCB entry that is negative or not finite; fills a missing weight_format.
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;

  at::Tensor weight;         // int8 [N, K] (float [N, K] with has_fp16_weights)
  at::Tensor SCB;            // f32 [N]
  at::Tensor weight_format;  // u8 0-d, 0

 private:
  double threshold_;
  bool has_fp16_weights_;
};

struct BnbLinear4bitOptions {
  bnb::FourBitType quant_type = bnb::FourBitType::kFp4;
  int64_t blocksize = 64;
  c10::ScalarType compute_dtype = c10::ScalarType::Float;  // bnb_4bit_compute_dtype
  bool double_quant = false;                               // bnb_4bit_use_double_quant
  c10::ScalarType quant_storage = c10::ScalarType::Byte;   // bnb_4bit_quant_storage
  // The checkpoint holds the packed state (LoadTarget::checkpoint_is_prequantized); then
  // `blocksize` is replaced by the one its quant_state JSON records.
  bool prequantized = false;
};

class BnbLinear4bit final : public QuantizedLinear {
 public:
  BnbLinear4bit(const models::LinearOptions& options, const BnbLinear4bitOptions& bnb_options);

  // INVALID_ARGUMENT when the packed byte count does not divide into quant_storage elements.
  absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) override;
  // In the dtype the weight was quantized from (the load dtype, bnb's quant_state.dtype).
  at::Tensor Dequantize() const override;
  at::Tensor Forward(const at::Tensor& x) const override;
  // Forward is packed->Matmul(x) + bias when x is already in the compute dtype.
  const kernels::PackedWeight* DirectPackedWeight(c10::ScalarType x_dtype) const override {
    return x_dtype == bnb_options_.compute_dtype ? PackedWithoutBias() : nullptr;
  }
  std::string kernel_name() const override;
  const char* type_name() const override { return "Linear4bit"; }

  // Dtype and shape checks of each tensor (INVALID_ARGUMENT naming it): `weight` in
  // quant_storage [(N*K+1)/2/itemsize, 1], `weight.quant_map` f32 [16], absmax f32 (u8 with
  // double quant) 1-D, nested_absmax f32 1-D, nested_quant_map f32 [256], the quant_state u8
  // 1-D holding parseable JSON (DATA_LOSS otherwise).
  absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                    const at::Tensor& value, const LoadTarget& target) override;
  // Cross-checks the JSON with the config and the module (quant_type, double quant, shape,
  // blocksize, dtype: INVALID_ARGUMENT) and the blocksize-dependent absmax lengths
  // (INVALID_ARGUMENT); DATA_LOSS for absmax values that are negative or not finite and a
  // quant_map that is not bnb's table (bnb's kernels use the built-in table, not the file's).
  absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) override;

  at::Tensor weight;            // packed codes, [(N*K+1)/2/itemsize, 1] in quant_storage
  at::Tensor absmax;            // f32 [nb], or u8 [nb] with double quant
  at::Tensor quant_map;         // f32 [16]
  at::Tensor nested_absmax;     // f32 [ceil(nb/256)] (double quant)
  at::Tensor nested_quant_map;  // f32 [256] (double quant)
  at::Tensor quant_state;       // u8 [L]: bnb's JSON of the non-tensor state

 private:
  // "weight.quant_state.bitsandbytes__nf4" or "...__fp4".
  std::string QuantStateKey() const;
  // The float32 per-block absmax (double quant undone).
  at::Tensor BlockAbsmax() const;
  at::Tensor DequantizeTo(c10::ScalarType dtype) const;
  // Installs the packed CPU kernel when the blocks line up with rows (see above).
  absl::Status PackForKernels(const LoadTarget& target);

  BnbLinear4bitOptions bnb_options_;
  at::Tensor dequant_lut_;                                 // FourBitCpuLut on the state's device
  c10::ScalarType weight_dtype_ = c10::ScalarType::Float;  // quant_state "dtype"
  float nested_offset_ = 0.f;                              // quant_state "nested_offset"
  int64_t nested_blocksize_ = 256;                         // quant_state "nested_blocksize"
  std::optional<bnb::QuantStateJson> loaded_state_;        // parsed at LoadSerializedTensor
};

}  // namespace quantserve::quant

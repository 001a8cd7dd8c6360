#pragma once
// PackedWeight: a quantized linear layer's weight, repacked once at load into the layout of the
// fastest correct kernel for its device, and the matmul that reads it.
//
// Methods describe their weight in one of a few canonical forms (a 16-entry table with
// group-wise scale and offset for every 4-bit format; int8 codes with a row scale), and Pack*
// picks the kernel: LibTorch's packed kernels where one fits (`_weight_int8pack_mm`,
// `_weight_int4pack_mm_for_cpu`, and on CUDA `_weight_int4pack_mm`/`_int_mm`), our own
// AVX2/AVX-512 kernels where none does. Every kernel has a `*Ref` oracle here, written as the
// plain formula, that its tests compare against.
//
// Thread-safety: Matmul is const and may run concurrently. Objects are born packed and valid.

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant::kernels {

class PackedWeight {
 public:
  virtual ~PackedWeight() = default;
  // y = x W^T: x is [..., K] (float32, bfloat16 or float16, on the weight's device); y is
  // [..., N] in x's dtype. Accumulates in float32. No bias.
  virtual at::Tensor Matmul(const at::Tensor& x) const = 0;
  // The kernel that runs ("lut4_gemv_avx2", "aten_weight_int8pack_mm", ...), for ModelInfo.
  virtual const std::string& name() const = 0;
  // Bytes this object holds beyond what it shares with its module (packed codes, scales),
  // counted in the model's footprint.
  virtual int64_t bytes() const = 0;
  // The codes this weight was packed from, rebuilt from its own layout bit for bit:
  // Lut4Weight::codes (uint8 [N, K]) or Int8RowwiseWeight::codes (int8 [N, K]); nullopt where
  // the layout does not keep them recoverably (LibTorch's packs). With them a method need not
  // keep its serialized copy of the codes resident (QuantizedLinear::ReleaseToPacked).
  virtual std::optional<at::Tensor> Codes() const { return std::nullopt; }
};

// y_i = weights[i]->Matmul(x) for weights that read the same input (a layer's q/k/v or
// gate/up projections), bit for bit. Where every weight is a CPU 4-bit kernel quantizing its
// input the same way and x is decode-sized, x is converted and quantized once and one parallel
// loop covers the rows of all of them; otherwise each Matmul runs in turn.
std::vector<at::Tensor> MatmulSameInput(const std::vector<const PackedWeight*>& weights,
                                        const at::Tensor& x);

// A 4-bit weight: w[n, k] = lut[q[n, k]] * scale[n, k / g] + offset[n, k / g].
// Affine integer formats (GPTQ, AWQ, HQQ, torchao int4, quanto int4, compressed-tensors) use
// lut = {0, 1, ..., 15} and offset = -zero * scale; NF4/FP4 use their value table, the block
// absmax as scale and no offset.
struct Lut4Weight {
  at::Tensor codes;                 // uint8 [N, K], values 0..15, one code per byte (CPU)
  std::array<float, 16> lut{};      // code -> value
  at::Tensor scale;                 // float32 [N, K / group_size]
  at::Tensor offset;                // float32 [N, K / group_size]; undefined = 0
  int64_t group_size = 0;           // divides K
  at::Tensor input_permutation;     // int64 [K] or undefined: x is gathered x[..., perm] first
                                    // (GPTQ act-order: columns sorted by group)
  // The dtype x will arrive in (the module's compute dtype): picks the kernel, as LibTorch's
  // packed kernels are fast only for 16-bit activations on CPU.
  c10::ScalarType compute_dtype = c10::ScalarType::Float;
  // Precision the CPU integer kernel rounds each input row to: 16 (default; within
  // kCpuKernelRelativeError of the float formula) or 8 (opt-in, as llama.cpp's Q8 inputs:
  // faster decode, tables rounded to int8 too; see kCpuInt8ActivationError). 8 runs where the
  // CPU has AVX-512 VNNI and group_size % 64 == 0; elsewhere the 16-bit kernel runs (name()
  // says which).
  int activation_bits = 16;
};

// INVALID_ARGUMENT when shapes or dtypes disagree. Always succeeds otherwise: shapes no fast
// kernel takes get a correct generic one. `device` is where the packed weight lives.
absl::StatusOr<std::unique_ptr<PackedWeight>> PackLut4(const Lut4Weight& w,
                                                       const c10::Device& device);
// Oracle: x @ (lut[q] * scale + offset)^T in float32, cast to x's dtype.
at::Tensor Lut4MatmulRef(const Lut4Weight& w, const at::Tensor& x);

// An int8 weight with one scale per output row: w[n, k] = codes[n, k] * scale[n].
struct Int8RowwiseWeight {
  at::Tensor codes;  // int8 [N, K] (CPU)
  at::Tensor scale;  // float32 [N]
  c10::ScalarType compute_dtype = c10::ScalarType::Float;  // as Lut4Weight::compute_dtype
};

absl::StatusOr<std::unique_ptr<PackedWeight>> PackInt8Rowwise(const Int8RowwiseWeight& w,
                                                              const c10::Device& device);
// Oracle: x @ (codes * scale)^T in float32, cast to x's dtype.
at::Tensor Int8RowwiseMatmulRef(const Int8RowwiseWeight& w, const at::Tensor& x);

// Accuracy of the CPU integer kernels with float32 activations: |y - ref| <= this times
// max |ref| over one Matmul's outputs, ref being the float formula (Lut4MatmulRef,
// Int8RowwiseMatmulRef). The input is rounded to int16 per 32 values (half a step is 1/65534 of
// the block's largest |x|) and a value table such as NF4 to int16 (1/32766 of its largest
// entry). Measured: 2e-5..5e-5 on model layers, at worst 1.2e-4 over the kernel tests' random
// shapes; end-to-end logprobs stay within 1e-5 of the libraries'.
inline constexpr double kCpuKernelRelativeError = 2e-4;
// The same bound with int8 activations (activation_bits = 8): each input is rounded to 1/254
// of its 64-column block's largest |x| and a value table to 1/254 of its largest entry.
// Measured at worst 2.4e-2 over the kernel tests' random shapes (single rows whose outputs
// cancel); what it costs a model is measured end to end by Compare (bench/RESULTS.md).
inline constexpr double kCpuInt8ActivationError = 4e-2;

// Which kernels this process's CPU can run ("avx2", "avx2+avx512bf16", "scalar"), for logs.
std::string CpuKernelLevel();

// The 4-bit kernel PackLut4 picks on this CPU for the shapes it packs (K and group_size
// multiples of 32): "lut4_q8_avx512" (activation_bits 8, group_size a multiple of 64, VNNI),
// "lut4_q16_avx512" (AVX-512 VNNI, a value table such as NF4 and group_size a multiple of 64),
// "lut4_q16_avx2" or
// "lut4_q16_scalar".
std::string CpuLut4KernelName(bool affine, int64_t group_size, int activation_bits = 16);

// False when the environment says QS_KERNELS=ref (read once per process): quantized methods
// then do not pack and dense layers run at::linear, so results can be checked against the
// reference arithmetic.
bool KernelsEnabled();

}  // namespace quantserve::quant::kernels

#pragma once
// Internal: PackLut4 / PackInt8Rowwise on CPU with an explicit kernel choice, for tests and the
// micro-benchmark (kernels/packed_weight.cc calls them with kAuto).

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant::kernels::internal {

// Kernel choice for tests and the micro-benchmark; production code uses kAuto.
enum class CpuKernel {
  kAuto,    // the default choice for this CPU and shape
  kScalar,  // our portable integer kernel (lut4_q16_scalar / int8_q16_scalar)
  kAvx2,    // our AVX2 integer kernel; falls back to kScalar on a CPU without AVX2
  kAvx512,  // our AVX-512 VNNI 4-bit kernel (int8: as kAvx2); falls back to kAvx2 / kScalar
  kAten,    // LibTorch's packed kernel (_weight_int8pack_mm / _weight_int4pack_mm_for_cpu)
};

struct CpuPackOptions {
  CpuKernel kernel = CpuKernel::kAuto;
  // Inputs with at most this many rows take the integer kernel; more rows dequantize tiles
  // of the weight and call at::mm per tile.
  // 16 covers a continuous batch of 16 decoding streams (blocked so the weights are read
  // once per step); prefill chunks are longer and take the GEMM.
  int64_t max_gemv_rows = 16;
};

// PackLut4 / PackInt8Rowwise on CPU with an explicit kernel choice. kAten for Lut4 requires an
// affine table, no permutation and group_size in {32, 64, 128, 256}; INVALID_ARGUMENT
// otherwise; kAten for int8 requires K % 8 == 0 (LibTorch's kernel crashes otherwise). Shapes
// the chunk layout cannot take get "lut4_dequant_linear" whatever the choice.
absl::StatusOr<std::unique_ptr<PackedWeight>> PackLut4Cpu(const Lut4Weight& w,
                                                          const CpuPackOptions& options);
absl::StatusOr<std::unique_ptr<PackedWeight>> PackInt8RowwiseCpu(const Int8RowwiseWeight& w,
                                                                 const CpuPackOptions& options);

// The decode (GEMV) path's input and output on raw float32 buffers, so a matmul costs one ATen
// op (allocating its result) instead of five (reshape, to-float, empty, to-dtype, view): a
// decode step makes ~150 matmuls.
//
// GemvInput: x2 as [m, K] float32 rows, read in place when it is float32 and contiguous, else
// converted into a thread-local buffer (so not reentrant on one thread: a matmul does not call
// another).
class GemvInput {
 public:
  explicit GemvInput(const at::Tensor& x2);
  int64_t m() const { return m_; }
  const float* x() const { return x_; }

 private:
  int64_t m_ = 0;
  const float* x_ = nullptr;
};
// GemvOutput: the result [..., n] with x's leading dimensions in x's dtype; the kernel writes
// float32 rows to y() (the result itself when float32), Finish() rounds them into it.
class GemvOutput {
 public:
  GemvOutput(const at::Tensor& x, int64_t m, int64_t n);
  float* y() { return y_; }
  at::Tensor Finish();

 private:
  int64_t count_ = 0;
  float* y_ = nullptr;
  std::vector<float> buffer_;
  at::Tensor out_;
};

// MatmulSameInput's CPU 4-bit path: the results when every weight is a CPU 4-bit kernel that
// quantizes its input the same way and x is decode-sized; nullopt otherwise.
std::optional<std::vector<at::Tensor>> Lut4MatmulSameInput(
    const std::vector<const PackedWeight*>& weights, const at::Tensor& x);

// A matmul input quantized to q16 (see cpu_kernels.h), owning its buffers.
struct Q16Input {
  int64_t m = 0;
  int64_t kp = 0;
  std::vector<int16_t> q;     // [M, KP]
  std::vector<float> d;       // [M, KP / 32]
  std::vector<float> bsum;    // [M, KP / 32]
  Q16Rows rows() const;
  // Copies as tensors (tests): int16 [M, KP], float32 [M, KP / 32] twice.
  at::Tensor q_tensor() const;
  at::Tensor d_tensor() const;
  at::Tensor bsum_tensor() const;
};
// x: [m, k] float32 rows (row stride k). `avx2` picks QuantizeQ16Avx2 (the caller checked
// HasAvx2Fma) or the scalar twin; both give the same codes.
Q16Input QuantizeQ16(const float* x, int64_t m, int64_t k, bool avx2);
// x: float32 contiguous [M, K] on the CPU.
Q16Input QuantizeQ16(const at::Tensor& x, bool avx2);
// Oracle side of q16: the float rows [M, K] the integer kernels multiply (q * d).
at::Tensor DequantizeQ16(const Q16Input& q, int64_t k);
// The integer kernels multiply by round(lut * s) / s with s = Q16TableScale(lut): 1 for the
// affine table 0..15 (exact), else 16383 / max |lut| (NF4: within 3.1e-5 of each value).
float Q16TableScale(const std::array<float, 16>& lut);
// Whether PackLut4 prefers the AVX-512 q16 kernel to the AVX2 one (where the CPU has both) for
// an affine (0..15) or value table with this group size.
bool Lut4Avx512Wins(bool affine, int64_t group_size);
// The int8-activation kernels' table scale: 1 for the affine table, else 127 / max |lut|, and
// the float table they multiply by: round(lut * s) / s.
float Q8TableScale(const std::array<float, 16>& lut);
std::array<float, 16> Q8TableValues(const std::array<float, 16>& lut);
// Oracle side of q8: the float rows [M, K] (q * d) that q [M, kp2] and dv (QuantizeQ8PairRows)
// stand for.
at::Tensor DequantizeQ8PairRows(const at::Tensor& q, const at::Tensor& dv, int64_t k);

// How many distinct threads an at::parallel_for over `tasks` one-item tasks ran on, from this
// library (tests: at::parallel_for only parallelizes where it is compiled with OpenMP).
int ParallelForThreads(int64_t tasks);

// Shape and dtype checks shared by every Pack* (INVALID_ARGUMENT naming the field).
absl::Status ValidateLut4(const Lut4Weight& w);
absl::Status ValidateInt8(const Int8RowwiseWeight& w);
// INVALID_ARGUMENT unless x is [..., k] float32/bfloat16/float16 on `device`.
absl::Status CheckInput(const at::Tensor& x, int64_t k, const c10::Device& device,
                        const std::string& kernel);
// The generic paths (any device, any shape): dequantize per call, then at::linear.
absl::StatusOr<std::unique_ptr<PackedWeight>> NewLut4DequantLinear(const Lut4Weight& w,
                                                                   const c10::Device& device);
absl::StatusOr<std::unique_ptr<PackedWeight>> NewInt8DequantLinear(const Int8RowwiseWeight& w,
                                                                   const c10::Device& device);

// The dense bf16 GEMV behind DenseLinear with an explicit kernel (tests, micro-benchmark).
enum class Bf16Kernel { kAvx512, kAvx2, kScalar };
// The best of Bf16Kernel this CPU runs, or nullopt when DenseLinear uses at::linear here.
std::optional<Bf16Kernel> ChooseBf16Kernel();
// x bf16 [M, K] (any M), weight bf16 [N, K] with unit column stride, bias float32-convertible
// [N] or undefined, all on the CPU; kernel must run on this CPU. Returns bf16 [M, N].
at::Tensor Bf16Gemv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                    Bf16Kernel kernel);

// DecodeAttention's layout check (without the QS_KERNELS switch) and the kernel with an
// explicit variant: avx2 picks DecodeAttentionAvx2 where d % 8 == 0 (the caller checked
// HasAvx2Fma), else the scalar twin.
bool DecodeAttentionLayoutOk(const at::Tensor& q, const at::Tensor& keys,
                             const at::Tensor& values);
at::Tensor DecodeAttentionCpu(const at::Tensor& q, const at::Tensor& keys,
                              const at::Tensor& values, int64_t lo, double scale, bool avx2);

}  // namespace quantserve::quant::kernels::internal

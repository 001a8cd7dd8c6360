#pragma once
// Internal: PackLut4 / PackInt8Rowwise on CPU with an explicit kernel choice, for tests and the
// micro-benchmark (kernels/packed_weight.cc calls them with kAuto).

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant::kernels::internal {

// Kernel choice for tests and the micro-benchmark; production code uses kAuto.
enum class CpuKernel {
  kAuto,    // the default choice for this CPU and shape
  kScalar,  // our portable kernel (lut4_gemv_scalar / int8_gemv_scalar)
  kAvx2,    // our AVX2 kernel; falls back to kScalar on a CPU without AVX2
  kAten,    // LibTorch's packed kernel (_weight_int8pack_mm / _weight_int4pack_mm_for_cpu)
};

struct CpuPackOptions {
  CpuKernel kernel = CpuKernel::kAuto;
  // Inputs with at most this many rows take the gemv path; more rows dequantize blocks of
  // the weight and call at::mm.
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

}  // namespace quantserve::quant::kernels::internal

#pragma once
// Dense (unquantized) linear layers: y = x W^T + b, for the model's own nn.Linear modules and
// the lm_head of every quantized model.
//
// At decode batch sizes a linear layer is a GEMV that reads the whole weight once per step, so
// it is bound by memory bandwidth. LibTorch's bf16 GEMV on CPU reads at well under the memory's
// rate (oneDNN ~16 GB/s and MKL's generic bf16 path slower still, measured on a 34 GB/s Zen 4),
// so bf16 weights on a CPU with AVX2 take our own kernel for inputs of up to
// kDenseGemvMaxRows rows: vdpbf16ps where the CPU has AVX512-BF16, bf16 -> float32 + FMA
// elsewhere. Everything else (more rows, float32/float16 weights, other devices,
// QS_KERNELS=ref) runs at::linear.
//
// Thread-safety: stateless; may run concurrently.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace quantserve::quant::kernels {

// Inputs with more rows than this are prefill chunks: at::linear's GEMM is compute-efficient.
inline constexpr int64_t kDenseGemvMaxRows = 16;

// y = x W^T + b. x [..., K]; weight [N, K]; bias [N] or undefined. Same contract as at::linear
// (same dtypes, y in x's dtype); sums run in float32 and are rounded once.
at::Tensor DenseLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// The kernel DenseLinear runs for decode-sized inputs on `weight` ("bf16_gemv_avx512",
// "bf16_gemv_avx2" or "aten_linear"), for ModelInfo and metrics.
std::string DenseKernelName(const at::Tensor& weight);

// Oracle: x W^T + b computed in float64 and cast to x's dtype.
at::Tensor DenseLinearRef(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace quantserve::quant::kernels

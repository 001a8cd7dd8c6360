#pragma once
// Fused elementwise ops of a decoder layer on CPU: RMSNorm and the rotary embedding.
//
// Written as ATen formulas these are 8 and 12 dispatched ops per call, each allocating its
// result: about a quarter of a 4-bit decode step went to such glue between the matmuls. Each
// kernel here rounds to the tensor's dtype at the same points as the formula it replaces (its
// *Ref, transformers' code) and matches it bit for bit: methods that quantize activations turn
// a last-bit difference into a different code, and their tests compare with the libraries.
//
// Thread-safety: stateless; may run concurrently.

#include <ATen/core/Tensor.h>

namespace quantserve::quant::kernels {

// True when the ops below take x: on the CPU, contiguous, float32/bfloat16/float16, and
// QS_KERNELS not "ref". Other tensors go through the *Ref formulas.
bool FusedOpsFit(const at::Tensor& x);

// transformers' LlamaRMSNorm: weight * (x / sqrt(mean(x^2, -1) + eps)) with the statistics in
// float32, the normalized x rounded to x's dtype, then multiplied by weight ([D], x's dtype).
// The mean stays ATen's reduction (3 ops: its summation order decides the last bit); the rest
// is one pass.
// Requires FusedOpsFit(x) and a contiguous weight of x's dtype and size x.size(-1).
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor RmsNormRef(const at::Tensor& x, const at::Tensor& weight, double eps);

// Rotary position embedding in place: x [T, H, d] becomes x * cos + rotate_half(x) * sin with
// cos/sin [T, d] (x's dtype) broadcast over the heads, rotate_half(x) = cat(-x2, x1). Requires
// FusedOpsFit for x, cos and sin and d even.
void ApplyRotaryInPlace(at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor RotaryRef(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace quantserve::quant::kernels

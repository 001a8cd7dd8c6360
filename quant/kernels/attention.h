#pragma once
// Single-query attention over one sequence's KV cache on CPU: the attention of a decode step.
//
// LibTorch's scaled_dot_product_attention answers a one-token query with its flash kernel,
// which multiplies per head through MKL's bf16 GEMV; on CPUs where MKL takes its generic path
// (AMD) that cost a quarter of a 4-bit decode step. This kernel reads each key and value row
// once for all the query heads of its group (GQA), in float32, with the probabilities rounded
// to bf16 before P.V when the cache is bf16, as the flash kernel does, so it agrees with SDPA to
// within float rounding.
//
// Thread-safety: stateless; may run concurrently.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace quantserve::quant::kernels {

// True when DecodeAttention takes these tensors: CPU, float32 or bf16 cache in q's dtype,
// keys/values [1, n_kv, L, d] with unit stride along d and rows d apart (KvCache's slabs),
// q [n_heads, d] with n_heads a multiple of n_kv, and QS_KERNELS not "ref".
bool DecodeAttentionFits(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values);

// softmax(q K[lo:L]^T * scale) V[lo:L] per head; [n_heads, d] in q's dtype. Requires Fits.
at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                           int64_t lo, double scale);

// Oracle: the same formula in float64, no rounding of the probabilities.
at::Tensor DecodeAttentionRef(const at::Tensor& q, const at::Tensor& keys,
                              const at::Tensor& values, int64_t lo, double scale);

}  // namespace quantserve::quant::kernels

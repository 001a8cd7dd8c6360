// DecodeAttention (attention.h): the AVX2 kernel of cpu_kernels_avx2.cc or its scalar twin,
// one task per KV head group.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "quant/kernels/attention.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"
#include "quant/kernels/worker_pool.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant::kernels {
namespace internal {
namespace {

float RoundToBf16(float x) { return static_cast<float>(c10::BFloat16(x)); }

float CacheValue(const void* base, int64_t i, bool bf16) {
  if (bf16) {
    return static_cast<float>(
        c10::BFloat16(static_cast<const uint16_t*>(base)[i], c10::BFloat16::from_bits()));
  }
  return static_cast<const float*>(base)[i];
}

}  // namespace

void DecodeAttentionScalar(const DecodeAttentionArgs& a, int64_t g0, int64_t g1) {
  const int64_t group = a.n_heads / a.n_kv;
  const int64_t len = a.hi - a.lo;
  const int64_t d = a.d;
  float* p = a.scratch;  // [len]
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t head = g * a.head_stride;
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const float* q = a.q + h * d;
      float max = -INFINITY;
      for (int64_t j = 0; j < len; ++j) {
        float s = 0.f;
        for (int64_t c = 0; c < d; ++c) s += q[c] * CacheValue(a.k, head + (a.lo + j) * d + c, a.bf16);
        p[j] = s * a.scale;
        max = std::max(max, p[j]);
      }
      float sum = 0.f;
      for (int64_t j = 0; j < len; ++j) {
        const float e = std::exp(p[j] - max);
        sum += e;
        p[j] = a.round_probs ? RoundToBf16(e) : e;
      }
      float* out = a.out + h * d;
      for (int64_t c = 0; c < d; ++c) out[c] = 0.f;
      for (int64_t j = 0; j < len; ++j) {
        for (int64_t c = 0; c < d; ++c) out[c] += p[j] * CacheValue(a.v, head + (a.lo + j) * d + c, a.bf16);
      }
      for (int64_t c = 0; c < d; ++c) out[c] /= sum;
    }
  }
}

at::Tensor DecodeAttentionCpu(const at::Tensor& q, const at::Tensor& keys,
                              const at::Tensor& values, int64_t lo, double scale, bool avx2) {
  TORCH_CHECK(DecodeAttentionLayoutOk(q, keys, values), "DecodeAttention: unsupported layout");
  const int64_t n_heads = q.size(0);
  const int64_t d = q.size(1);
  const int64_t n_kv = keys.size(1);
  const int64_t hi = keys.size(2);
  TORCH_CHECK(0 <= lo && lo < hi, "DecodeAttention: empty position range");
  const at::Tensor qf = q.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({n_heads, d}, q.options().dtype(at::kFloat));
  DecodeAttentionArgs a;
  a.q = qf.const_data_ptr<float>();
  a.k = keys.const_data_ptr();
  a.v = values.const_data_ptr();
  a.bf16 = keys.scalar_type() == at::kBFloat16;
  a.n_heads = n_heads;
  a.n_kv = n_kv;
  a.d = d;
  a.head_stride = keys.stride(1);
  a.lo = lo;
  a.hi = hi;
  a.scale = static_cast<float>(scale);
  a.round_probs = a.bf16;
  a.out = out.data_ptr<float>();
  const bool vector = avx2 && d % 8 == 0;
  ParallelFor(0, n_kv, 1, [&](int64_t g0, int64_t g1) {
    DecodeAttentionArgs task = a;
    std::vector<float> scratch(DecodeAttentionScratch(a));
    task.scratch = scratch.data();
    if (vector) {
      DecodeAttentionAvx2(task, g0, g1);
    } else {
      DecodeAttentionScalar(task, g0, g1);
    }
  });
  return out.to(q.scalar_type());
}

bool DecodeAttentionLayoutOk(const at::Tensor& q, const at::Tensor& keys,
                             const at::Tensor& values) {
  if (!q.defined() || !keys.defined() || !values.defined()) return false;
  if (!q.device().is_cpu() || !keys.device().is_cpu() || !values.device().is_cpu()) return false;
  const auto dtype = keys.scalar_type();
  if ((dtype != at::kFloat && dtype != at::kBFloat16) || values.scalar_type() != dtype ||
      q.scalar_type() != dtype) {
    return false;
  }
  if (q.dim() != 2 || keys.dim() != 4 || keys.sizes() != values.sizes() ||
      keys.strides() != values.strides() || keys.size(0) != 1) {
    return false;
  }
  const int64_t d = q.size(1);
  const int64_t n_kv = keys.size(1);
  return d > 0 && n_kv > 0 && keys.size(3) == d && keys.size(2) > 0 && keys.stride(3) == 1 &&
         keys.stride(2) == d && q.size(0) % n_kv == 0;
}

}  // namespace internal

bool DecodeAttentionFits(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values) {
  return KernelsEnabled() && internal::DecodeAttentionLayoutOk(q, keys, values);
}

at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                           int64_t lo, double scale) {
  return internal::DecodeAttentionCpu(q, keys, values, lo, scale, internal::HasAvx2Fma());
}

at::Tensor DecodeAttentionRef(const at::Tensor& q, const at::Tensor& keys,
                              const at::Tensor& values, int64_t lo, double scale) {
  const int64_t n_heads = q.size(0);
  const int64_t n_kv = keys.size(1);
  const int64_t hi = keys.size(2);
  // [n_kv, L, d] -> one copy per query head: [n_heads, L - lo, d].
  const auto per_head = [&](const at::Tensor& t) {
    return t[0].narrow(1, lo, hi - lo).to(at::kDouble).repeat_interleave(n_heads / n_kv, 0);
  };
  const at::Tensor k = per_head(keys);
  const at::Tensor v = per_head(values);
  const at::Tensor scores = at::bmm(k, q.to(at::kDouble).unsqueeze(2)).squeeze(2) * scale;
  const at::Tensor p = at::softmax(scores, -1);
  return at::bmm(p.unsqueeze(1), v).squeeze(1).to(q.scalar_type());
}

}  // namespace quantserve::quant::kernels

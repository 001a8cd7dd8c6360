#include "models/kv_cache.h"

#include <ATen/ATen.h>

namespace quantserve::models {

KvCache::KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity,
                 const at::TensorOptions& options)
    : capacity_(capacity) {
  keys_.reserve(n_layers);
  values_.reserve(n_layers);
  for (int64_t i = 0; i < n_layers; ++i) {
    keys_.push_back(at::empty({1, n_kv_heads, capacity, head_dim}, options));
    values_.push_back(at::empty({1, n_kv_heads, capacity, head_dim}, options));
  }
}

std::pair<at::Tensor, at::Tensor> KvCache::Update(int64_t layer, int64_t start,
                                                  const at::Tensor& k, const at::Tensor& v) {
  const int64_t t = k.size(2);
  keys_[layer].narrow(2, start, t).copy_(k);
  values_[layer].narrow(2, start, t).copy_(v);
  return {keys_[layer].narrow(2, 0, start + t), values_[layer].narrow(2, 0, start + t)};
}

int64_t KvCache::bytes() const {
  int64_t n = 0;
  for (const auto& t : keys_) n += t.numel() * t.element_size();
  for (const auto& t : values_) n += t.numel() * t.element_size();
  return n;
}

}  // namespace quantserve::models

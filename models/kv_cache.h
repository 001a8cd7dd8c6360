#pragma once
// KvCache: one sequence's attention keys and values for every layer, in preallocated slabs.
//
// Slabs are [1, n_kv_heads, capacity, head_dim] per layer in the compute dtype, allocated once
// when a sequence starts (capacity = prompt + max_new_tokens, bounded by the model's context),
// so decode never reallocates. Not thread-safe: a sequence is stepped by one thread at a time.

#include <ATen/core/Tensor.h>

#include <vector>

namespace quantserve::models {

class KvCache {
 public:
  KvCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity,
          const at::TensorOptions& options);

  int64_t capacity() const { return capacity_; }
  // Number of positions already written (the next token's position).
  int64_t length() const { return length_; }
  void set_length(int64_t length) { length_ = length; }

  // Writes `k`/`v` ([1, n_kv, T, d]) at positions [start, start+T) of `layer` and returns views
  // of positions [0, start+T).
  std::pair<at::Tensor, at::Tensor> Update(int64_t layer, int64_t start, const at::Tensor& k,
                                           const at::Tensor& v);

  int64_t bytes() const;

 private:
  int64_t capacity_;
  int64_t length_ = 0;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

}  // namespace quantserve::models

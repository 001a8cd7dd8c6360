#pragma once
// LlamaForCausalLM for Llama, Mistral and Qwen2 checkpoints: GQA, optional q/k/v(/o) biases,
// tied embeddings, rotary embeddings with default/linear/llama3 scaling, and a KV cache.
// Module names are the HF checkpoint keys ("model.layers.N.self_attn.q_proj.weight").
//
// Built on the meta device by the constructor; the loader materializes every parameter.
// After loading, Forward may run concurrently for different caches.

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "models/kv_cache.h"
#include "models/layers.h"
#include "models/model_config.h"
#include "models/module.h"

namespace quantserve::models {

// One sequence's share of a packed forward: `tokens` consecutive rows of the packed input, at
// positions [cache->length(), +tokens) of its own cache. Continuous batching packs decode
// steps (1 token) and prefills (the prompt) of many sequences into one forward.
struct SequenceSpan {
  KvCache* cache = nullptr;
  int64_t tokens = 0;
};

class LlamaAttention final : public Module {
 public:
  LlamaAttention(const ModelConfig& config, c10::ScalarType dtype);
  // x: [T, hidden], the spans' rows back to back; cos/sin: [T, head_dim] at each row's
  // position. The projections see all rows at once; attention runs per span on its cache.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     int64_t layer, const std::vector<SequenceSpan>& spans) const;
  const char* type_name() const override { return "LlamaAttention"; }

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
  double scale_;  // 1 / sqrt(head_dim), SDPA's default
  std::optional<int64_t> sliding_window_;
};

class LlamaMlp final : public Module {
 public:
  LlamaMlp(const ModelConfig& config, c10::ScalarType dtype);
  at::Tensor Forward(const at::Tensor& x) const;
  const char* type_name() const override { return "LlamaMLP"; }

  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

class LlamaDecoderLayer final : public Module {
 public:
  LlamaDecoderLayer(const ModelConfig& config, c10::ScalarType dtype);
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     int64_t layer, const std::vector<SequenceSpan>& spans) const;
  const char* type_name() const override { return "LlamaDecoderLayer"; }

  std::shared_ptr<LlamaAttention> self_attn;
  std::shared_ptr<LlamaMlp> mlp;
  std::shared_ptr<RmsNorm> input_layernorm, post_attention_layernorm;
};

// The `model.` submodule of LlamaForCausalLM.
class LlamaModel final : public Module {
 public:
  LlamaModel(const ModelConfig& config, c10::ScalarType dtype);
  const char* type_name() const override { return "LlamaModel"; }

  std::shared_ptr<Embedding> embed_tokens;
  std::vector<std::shared_ptr<LlamaDecoderLayer>> layers;
  std::shared_ptr<RmsNorm> norm;
};

class LlamaForCausalLM final : public Module {
 public:
  LlamaForCausalLM(const ModelConfig& config, c10::ScalarType dtype);
  const char* type_name() const override { return "LlamaForCausalLM"; }

  // Runs `ids` ([1, T] int64, positions [cache.length(), +T)) through the model, appending to
  // `cache`. Returns float32 logits [T, vocab] (only the last row when `last_only`).
  at::Tensor Forward(const at::Tensor& ids, KvCache& cache, bool last_only) const;

  // The final normalized hidden states [T, hidden] for `ids` (Forward without lm_head), so
  // callers can apply the output layer in row chunks and bound their memory.
  at::Tensor ForwardHidden(const at::Tensor& ids, KvCache& cache) const;
  // The packed form: `ids` [T] int64 holds every span's tokens back to back. Returns the
  // final normalized hidden states [T, hidden] and advances each span's cache. Every span
  // needs its own cache (no two spans may share one).
  at::Tensor ForwardPacked(const at::Tensor& ids, const std::vector<SequenceSpan>& spans) const;

  // A cache sized for `capacity` positions on the model's device and dtype.
  KvCache NewCache(int64_t capacity) const;
  // Bytes one position of a cache takes (keys and values of every layer).
  int64_t KvBytesPerToken() const;

  // Called by the loader once every parameter is materialized: ties lm_head to the
  // embeddings when configured and builds the rotary tables on the weights' device.
  void FinishLoading();

  const ModelConfig& config() const { return config_; }

  std::shared_ptr<LlamaModel> model;
  std::shared_ptr<Linear> lm_head;

 private:
  ModelConfig config_;
  c10::ScalarType dtype_;
  at::Tensor inv_freq_;  // [head_dim/2] float32, scaled per rope_scaling
};

// The rotary inverse frequencies for `config`, as transformers computes them (float32).
at::Tensor RopeInverseFrequencies(const ModelConfig& config);

}  // namespace quantserve::models

#pragma once
// BertModel for sentence embeddings (all-MiniLM-L6-v2 and friends): embeddings, post-LN
// encoder layers, and mean/CLS/last pooling. Names are the HF keys without the `bert.` prefix
// (the loader strips it, as transformers' base_model_prefix logic does).
//
// Built on the meta device; the loader materializes it. Forward is reentrant after loading.

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "models/layers.h"
#include "models/model_config.h"
#include "models/module.h"

namespace quantserve::models {

class BertEmbeddings final : public Module {
 public:
  BertEmbeddings(const ModelConfig& c, c10::ScalarType dtype);
  at::Tensor Forward(const at::Tensor& ids) const;  // ids [B, T]
  const char* type_name() const override { return "BertEmbeddings"; }

  std::shared_ptr<Embedding> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<LayerNorm> LayerNorm_;
};

class BertLayer final : public Module {
 public:
  BertLayer(const ModelConfig& c, c10::ScalarType dtype);
  // x [B, T, hidden]; mask_bias [B, 1, 1, T] additive (0 or -inf-ish), may be undefined.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& mask_bias) const;
  const char* type_name() const override { return "BertLayer"; }

  // attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
  // intermediate.dense, output.{dense,LayerNorm}
  std::shared_ptr<Linear> query, key, value, attention_output_dense, intermediate_dense,
      output_dense;
  std::shared_ptr<LayerNorm> attention_output_norm, output_norm;

 private:
  int64_t n_heads_, head_dim_;
  std::vector<std::shared_ptr<Module>> groups_;  // path-only parents of the layers above
};

class BertModel final : public Module {
 public:
  BertModel(const ModelConfig& c, c10::ScalarType dtype);
  const char* type_name() const override { return "BertModel"; }

  // Token embeddings [B, T, hidden] for `ids` [B, T] with `attention_mask` [B, T] (1 = token).
  at::Tensor Forward(const at::Tensor& ids, const at::Tensor& attention_mask) const;

  const ModelConfig& config() const { return config_; }

  std::shared_ptr<BertEmbeddings> embeddings;
  std::vector<std::shared_ptr<BertLayer>> layers;

 private:
  ModelConfig config_;
  std::shared_ptr<Module> encoder_;  // path-only parent: "encoder.layer.N"
};

// Pools token embeddings [B, T, H] with mask [B, T] into [B, H] float32: "mean" (masked
// average), "cls" (first token) or "last" (last unmasked token); L2-normalized if asked.
at::Tensor PoolEmbeddings(const at::Tensor& tokens, const at::Tensor& attention_mask,
                          const std::string& pooling, bool normalize);

}  // namespace quantserve::models

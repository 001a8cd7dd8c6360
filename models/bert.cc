#include "models/bert.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace quantserve::models {
namespace {

// A module that only groups children under a path segment ("attention.self").
class Group final : public Module {
 public:
  const char* type_name() const override { return "Group"; }
  using Module::RegisterModule;
};

std::shared_ptr<Linear> MakeLinear(int64_t in, int64_t out, c10::ScalarType dtype) {
  return std::make_shared<DenseLinear>(LinearOptions{in, out, /*bias=*/true, dtype});
}

}  // namespace

BertEmbeddings::BertEmbeddings(const ModelConfig& c, c10::ScalarType dtype) {
  word_embeddings = std::make_shared<Embedding>(c.vocab_size, c.hidden_size, dtype);
  position_embeddings =
      std::make_shared<Embedding>(c.max_position_embeddings, c.hidden_size, dtype);
  token_type_embeddings = std::make_shared<Embedding>(c.type_vocab_size, c.hidden_size, dtype);
  LayerNorm_ = std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps, dtype);
  RegisterModule("word_embeddings", &word_embeddings);
  RegisterModule("position_embeddings", &position_embeddings);
  RegisterModule("token_type_embeddings", &token_type_embeddings);
  RegisterModule("LayerNorm", &LayerNorm_);
}

at::Tensor BertEmbeddings::Forward(const at::Tensor& ids) const {
  const int64_t t = ids.size(1);
  at::Tensor positions = at::arange(t, ids.options()).unsqueeze(0);
  at::Tensor types = at::zeros_like(ids);
  at::Tensor h = word_embeddings->Forward(ids) + token_type_embeddings->Forward(types);
  h = h + position_embeddings->Forward(positions);
  return LayerNorm_->Forward(h);
}

BertLayer::BertLayer(const ModelConfig& c, c10::ScalarType dtype)
    : n_heads_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads) {
  const int64_t h = c.hidden_size;
  query = MakeLinear(h, h, dtype);
  key = MakeLinear(h, h, dtype);
  value = MakeLinear(h, h, dtype);
  attention_output_dense = MakeLinear(h, h, dtype);
  attention_output_norm = std::make_shared<LayerNorm>(h, c.layer_norm_eps, dtype);
  intermediate_dense = MakeLinear(h, c.intermediate_size, dtype);
  output_dense = MakeLinear(c.intermediate_size, h, dtype);
  output_norm = std::make_shared<LayerNorm>(h, c.layer_norm_eps, dtype);

  // Mirror the HF nesting so names match the checkpoint keys.
  auto self = std::make_shared<Group>();
  self->RegisterModule("query", &query);
  self->RegisterModule("key", &key);
  self->RegisterModule("value", &value);
  auto attn_out = std::make_shared<Group>();
  attn_out->RegisterModule("dense", &attention_output_dense);
  attn_out->RegisterModule("LayerNorm", &attention_output_norm);
  auto attention = std::make_shared<Group>();
  attention->RegisterModule("self", &self);
  attention->RegisterModule("output", &attn_out);
  auto intermediate = std::make_shared<Group>();
  intermediate->RegisterModule("dense", &intermediate_dense);
  auto output = std::make_shared<Group>();
  output->RegisterModule("dense", &output_dense);
  output->RegisterModule("LayerNorm", &output_norm);
  groups_ = {self, attn_out, attention, intermediate, output};
  RegisterModule("attention", &groups_[2]);
  RegisterModule("intermediate", &groups_[3]);
  RegisterModule("output", &groups_[4]);
}

at::Tensor BertLayer::Forward(const at::Tensor& x, const at::Tensor& mask_bias) const {
  const int64_t b = x.size(0), t = x.size(1);
  auto heads = [&](const at::Tensor& y) {
    return y.view({b, t, n_heads_, head_dim_}).transpose(1, 2);
  };
  at::Tensor q = heads(query->Forward(x));
  at::Tensor k = heads(key->Forward(x));
  at::Tensor v = heads(value->Forward(x));
  std::optional<at::Tensor> mask;
  if (mask_bias.defined()) mask = mask_bias;
  at::Tensor ctx = at::scaled_dot_product_attention(q, k, v, mask);
  ctx = ctx.transpose(1, 2).reshape({b, t, n_heads_ * head_dim_});
  at::Tensor attn = attention_output_norm->Forward(attention_output_dense->Forward(ctx) + x);
  at::Tensor inter = at::gelu(intermediate_dense->Forward(attn));
  return output_norm->Forward(output_dense->Forward(inter) + attn);
}

BertModel::BertModel(const ModelConfig& c, c10::ScalarType dtype) : config_(c) {
  embeddings = std::make_shared<BertEmbeddings>(c, dtype);
  RegisterModule("embeddings", &embeddings);
  layers.resize(c.num_hidden_layers);
  encoder_ = std::make_shared<Group>();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers[i] = std::make_shared<BertLayer>(c, dtype);
    static_cast<Group*>(encoder_.get())->RegisterModule("layer." + std::to_string(i), &layers[i]);
  }
  RegisterModule("encoder", &encoder_);
}

at::Tensor BertModel::Forward(const at::Tensor& ids, const at::Tensor& attention_mask) const {
  at::Tensor h = embeddings->Forward(ids);
  at::Tensor bias;
  if (attention_mask.defined() && !attention_mask.all().item<bool>()) {
    // transformers' extended mask: (1 - mask) * finfo.min, broadcast over heads and queries.
    bias = (1.0 - attention_mask.to(h.scalar_type())) *
           std::numeric_limits<float>::lowest();
    bias = bias.view({ids.size(0), 1, 1, ids.size(1)});
  }
  for (const auto& layer : layers) h = layer->Forward(h, bias);
  return h;
}

at::Tensor PoolEmbeddings(const at::Tensor& tokens, const at::Tensor& attention_mask,
                          const std::string& pooling, bool normalize) {
  at::Tensor t = tokens.to(at::kFloat);
  at::Tensor mask = attention_mask.to(at::kFloat).unsqueeze(-1);  // [B, T, 1]
  at::Tensor pooled;
  if (pooling == "cls") {
    pooled = t.select(1, 0);
  } else if (pooling == "last") {
    at::Tensor last = attention_mask.sum(1).to(at::kLong) - 1;  // [B]
    pooled = t.index({at::arange(t.size(0), last.options()), last});
  } else {
    pooled = (t * mask).sum(1) / at::clamp_min(mask.sum(1), 1e-9);
  }
  if (normalize) {
    pooled = pooled / at::clamp_min(pooled.norm(2, {1}, /*keepdim=*/true), 1e-12);
  }
  return pooled;
}

}  // namespace quantserve::models

#include "models/llama.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "quant/kernels/attention.h"
#include "quant/kernels/fused_ops.h"

namespace quantserve::models {
namespace {

std::shared_ptr<Linear> MakeLinear(int64_t in, int64_t out, bool bias, c10::ScalarType dtype) {
  return std::make_shared<DenseLinear>(LinearOptions{in, out, bias, dtype});
}

// x [T, H, d] rotated by the rows' cos/sin [T, d]; in place where the fused kernel takes it.
at::Tensor Rotate(at::Tensor x, const at::Tensor& cos, const at::Tensor& sin) {
  namespace k = quant::kernels;
  if (k::FusedOpsFit(x) && k::FusedOpsFit(cos) && k::FusedOpsFit(sin) &&
      cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type()) {
    k::ApplyRotaryInPlace(x, cos, sin);
    return x;
  }
  return k::RotaryRef(x, cos, sin);
}

}  // namespace

at::Tensor RopeInverseFrequencies(const ModelConfig& config) {
  const int64_t dim = config.head_dim;
  at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = 1.0 / at::pow(config.rope_theta, exponents);
  const RopeScaling& rs = config.rope_scaling;
  if (rs.type == "linear") {
    // transformers divides the positions by the factor; dividing the frequencies is the same
    // product up to float rounding of position/factor, which is exact for power-of-two factors.
    inv_freq = inv_freq / rs.factor;
  } else if (rs.type == "llama3") {
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_freq_wavelen = old_len / rs.low_freq_factor;
    const double high_freq_wavelen = old_len / rs.high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor llama = at::where(wavelen > low_freq_wavelen, inv_freq / rs.factor, inv_freq);
    at::Tensor smooth =
        (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * llama / rs.factor + smooth * llama;
    at::Tensor is_medium = at::logical_not(wavelen < high_freq_wavelen)
                               .logical_and(at::logical_not(wavelen > low_freq_wavelen));
    inv_freq = at::where(is_medium, smoothed, llama);
  }
  return inv_freq;
}

LlamaAttention::LlamaAttention(const ModelConfig& c, c10::ScalarType dtype)
    : n_heads_(c.num_attention_heads),
      n_kv_heads_(c.num_key_value_heads),
      head_dim_(c.head_dim),
      scale_(1.0 / std::sqrt(static_cast<double>(c.head_dim))),
      sliding_window_(c.sliding_window) {
  q_proj = MakeLinear(c.hidden_size, n_heads_ * head_dim_, c.attention_bias, dtype);
  k_proj = MakeLinear(c.hidden_size, n_kv_heads_ * head_dim_, c.attention_bias, dtype);
  v_proj = MakeLinear(c.hidden_size, n_kv_heads_ * head_dim_, c.attention_bias, dtype);
  o_proj = MakeLinear(n_heads_ * head_dim_, c.hidden_size, c.o_proj_bias, dtype);
  RegisterModule("q_proj", &q_proj);
  RegisterModule("k_proj", &k_proj);
  RegisterModule("v_proj", &v_proj);
  RegisterModule("o_proj", &o_proj);
}

at::Tensor LlamaAttention::Forward(const at::Tensor& x, const at::Tensor& cos,
                                   const at::Tensor& sin, int64_t layer,
                                   const std::vector<SequenceSpan>& spans) const {
  const int64_t rows = x.size(0);
  // [T, H*d] -> [T, H, d]; rotary tables broadcast over heads.
  const std::vector<at::Tensor> qkv = ForwardSameInput({q_proj.get(), k_proj.get(), v_proj.get()}, x);
  at::Tensor q = qkv[0].view({rows, n_heads_, head_dim_});
  at::Tensor k = qkv[1].view({rows, n_kv_heads_, head_dim_});
  at::Tensor v = qkv[2].view({rows, n_kv_heads_, head_dim_});
  q = Rotate(q, cos, sin);
  k = Rotate(k, cos, sin);

  // Every span's attention output lands in its rows of one [T, H*d] tensor.
  at::Tensor attn = at::empty({rows, n_heads_ * head_dim_}, q.options());
  int64_t row = 0;
  for (const SequenceSpan& span : spans) {
    const int64_t t = span.tokens;
    const int64_t start = span.cache->length();
    // [t, H, d] -> [1, H, t, d]
    const auto heads = [&](const at::Tensor& a) { return a.narrow(0, row, t).transpose(0, 1).unsqueeze(0); };
    auto [keys, values] = span.cache->Update(layer, start, heads(k), heads(v));
    const int64_t kv_len = keys.size(2);
    const bool windowed = sliding_window_.has_value() && kv_len > *sliding_window_;

    if (t == 1) {
      // A decode step: one query against the cache, without SDPA's per-call dispatch. The
      // query at position kv_len - 1 sees the last `window` keys when windowed.
      const at::Tensor query = q[row];  // [H, d]
      if (quant::kernels::DecodeAttentionFits(query, keys, values)) {
        const int64_t lo = windowed ? kv_len - *sliding_window_ : 0;
        attn[row].copy_(quant::kernels::DecodeAttention(query, keys, values, lo, scale_).view(-1));
        row += t;
        continue;
      }
    }

    std::optional<at::Tensor> mask;
    bool is_causal = false;
    if (t > 1 && start == 0 && !windowed) {
      is_causal = true;
    } else if (t > 1 || windowed) {
      // Query i sits at position start+i and sees keys j <= start+i (and > start+i-window).
      at::Tensor qpos = at::arange(start, start + t, at::kLong).unsqueeze(1);
      at::Tensor kpos = at::arange(0, kv_len, at::kLong).unsqueeze(0);
      at::Tensor allowed = kpos <= qpos;
      if (windowed) allowed = allowed.logical_and(kpos > qpos - *sliding_window_);
      mask = allowed.to(keys.device());
    }
    at::Tensor out = at::scaled_dot_product_attention(heads(q), keys, values, mask, 0.0, is_causal,
                                                      std::nullopt, n_heads_ != n_kv_heads_);
    attn.narrow(0, row, t).copy_(out.squeeze(0).transpose(0, 1).reshape({t, n_heads_ * head_dim_}));
    row += t;
  }
  return o_proj->Forward(attn);
}

LlamaMlp::LlamaMlp(const ModelConfig& c, c10::ScalarType dtype) {
  gate_proj = MakeLinear(c.hidden_size, c.intermediate_size, c.mlp_bias, dtype);
  up_proj = MakeLinear(c.hidden_size, c.intermediate_size, c.mlp_bias, dtype);
  down_proj = MakeLinear(c.intermediate_size, c.hidden_size, c.mlp_bias, dtype);
  RegisterModule("gate_proj", &gate_proj);
  RegisterModule("up_proj", &up_proj);
  RegisterModule("down_proj", &down_proj);
}

at::Tensor LlamaMlp::Forward(const at::Tensor& x) const {
  // silu(gate) * up in place on the projection's fresh output: ATen's own ops (the same
  // rounding as transformers), without two allocations.
  std::vector<at::Tensor> gate_up = ForwardSameInput({gate_proj.get(), up_proj.get()}, x);
  at::silu_(gate_up[0]).mul_(gate_up[1]);
  return down_proj->Forward(gate_up[0]);
}

LlamaDecoderLayer::LlamaDecoderLayer(const ModelConfig& c, c10::ScalarType dtype) {
  self_attn = std::make_shared<LlamaAttention>(c, dtype);
  mlp = std::make_shared<LlamaMlp>(c, dtype);
  input_layernorm = std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, dtype);
  post_attention_layernorm = std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, dtype);
  RegisterModule("self_attn", &self_attn);
  RegisterModule("mlp", &mlp);
  RegisterModule("input_layernorm", &input_layernorm);
  RegisterModule("post_attention_layernorm", &post_attention_layernorm);
}

at::Tensor LlamaDecoderLayer::Forward(const at::Tensor& x, const at::Tensor& cos,
                                      const at::Tensor& sin, int64_t layer,
                                      const std::vector<SequenceSpan>& spans) const {
  at::Tensor h = x + self_attn->Forward(input_layernorm->Forward(x), cos, sin, layer, spans);
  return h + mlp->Forward(post_attention_layernorm->Forward(h));
}

LlamaModel::LlamaModel(const ModelConfig& c, c10::ScalarType dtype) {
  embed_tokens = std::make_shared<Embedding>(c.vocab_size, c.hidden_size, dtype);
  RegisterModule("embed_tokens", &embed_tokens);
  layers.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers[i] = std::make_shared<LlamaDecoderLayer>(c, dtype);
    RegisterModule("layers." + std::to_string(i), &layers[i]);
  }
  norm = std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, dtype);
  RegisterModule("norm", &norm);
}

LlamaForCausalLM::LlamaForCausalLM(const ModelConfig& c, c10::ScalarType dtype)
    : config_(c), dtype_(dtype) {
  model = std::make_shared<LlamaModel>(c, dtype);
  RegisterModule("model", &model);
  lm_head = MakeLinear(c.hidden_size, c.vocab_size, false, dtype);
  RegisterModule("lm_head", &lm_head);
  if (c.tie_word_embeddings) {
    // Cannot fail: DenseLinear always registers "weight".
    (void)lm_head->MarkTied("weight", "model.embed_tokens.weight");
  }
}

void LlamaForCausalLM::FinishLoading() {
  if (config_.tie_word_embeddings) {
    if (auto* dense = dynamic_cast<DenseLinear*>(lm_head.get())) {
      dense->weight = model->embed_tokens->weight;
    }
  }
  inv_freq_ = RopeInverseFrequencies(config_).to(model->embed_tokens->weight.device());
}

KvCache LlamaForCausalLM::NewCache(int64_t capacity) const {
  return KvCache(config_.num_hidden_layers, config_.num_key_value_heads, config_.head_dim,
                 capacity,
                 at::TensorOptions().dtype(dtype_).device(model->embed_tokens->weight.device()));
}

int64_t LlamaForCausalLM::KvBytesPerToken() const {
  return 2 * config_.num_hidden_layers * config_.num_key_value_heads * config_.head_dim *
         static_cast<int64_t>(c10::elementSize(dtype_));
}

at::Tensor LlamaForCausalLM::Forward(const at::Tensor& ids, KvCache& cache, bool last_only) const {
  at::Tensor h = ForwardHidden(ids, cache);
  if (last_only) h = h.narrow(0, h.size(0) - 1, 1);
  return lm_head->Forward(h).to(at::kFloat);
}

at::Tensor LlamaForCausalLM::ForwardHidden(const at::Tensor& ids, KvCache& cache) const {
  return ForwardPacked(ids.reshape({-1}), {SequenceSpan{&cache, ids.size(-1)}});
}

at::Tensor LlamaForCausalLM::ForwardPacked(const at::Tensor& ids,
                                           const std::vector<SequenceSpan>& spans) const {
  // Rotary tables for every row's position, computed in float32 like transformers.
  std::vector<float> positions;
  positions.reserve(ids.size(0));
  for (const SequenceSpan& span : spans) {
    const int64_t start = span.cache->length();
    for (int64_t i = 0; i < span.tokens; ++i) positions.push_back(static_cast<float>(start + i));
  }
  at::Tensor pos = at::tensor(positions, at::kFloat).to(inv_freq_.device());
  at::Tensor freqs = pos.unsqueeze(1) * inv_freq_.unsqueeze(0);  // [T, d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos().to(dtype_);
  at::Tensor sin = emb.sin().to(dtype_);

  at::Tensor h = model->embed_tokens->Forward(ids);  // [T, hidden]
  for (size_t i = 0; i < model->layers.size(); ++i) {
    h = model->layers[i]->Forward(h, cos, sin, static_cast<int64_t>(i), spans);
  }
  for (const SequenceSpan& span : spans) span.cache->set_length(span.cache->length() + span.tokens);
  return model->norm->Forward(h);
}

}  // namespace quantserve::models

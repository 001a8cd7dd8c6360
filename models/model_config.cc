#include "models/model_config.h"

#include <tuple>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_nesting.h"

namespace quantserve::models {
namespace {

using json = nlohmann::json;

absl::Status FieldError(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: field '", field, "' ", why));
}

// Reads an optional integer field; wrong types are errors, absent leaves `*out` unchanged.
absl::Status GetInt(const json& j, const char* key, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(key, "must be an integer");
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status GetDouble(const json& j, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(key, "must be a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(key, "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status GetString(const json& j, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(key, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// eos_token_id may be an int or a list of ints.
absl::Status GetIdList(const json& j, const char* key, std::vector<int32_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  out->clear();
  if (it->is_number_integer()) {
    out->push_back(it->get<int32_t>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return FieldError(key, "must be an integer or a list of integers");
  for (const auto& v : *it) {
    if (!v.is_number_integer()) return FieldError(key, "must be an integer or a list of integers");
    out->push_back(v.get<int32_t>());
  }
  return absl::OkStatus();
}

absl::Status GetOptionalId(const json& j, const char* key, std::optional<int32_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
    *out = (*it)[0].get<int32_t>();
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) return FieldError(key, "must be an integer");
  *out = it->get<int32_t>();
  return absl::OkStatus();
}

absl::Status ParseRopeScaling(const json& j, ModelConfig& c) {
  // transformers >= 4.45 also writes `rope_parameters`; both carry the same keys.
  const json* rs = nullptr;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null()) {
      if (!it->is_object()) return FieldError(key, "must be an object");
      rs = &*it;
      break;
    }
  }
  if (rs == nullptr) return absl::OkStatus();
  std::string type;
  auto t = rs->find("rope_type");
  if (t == rs->end()) t = rs->find("type");
  if (t != rs->end() && t->is_string()) type = t->get<std::string>();
  if (type.empty()) type = "default";
  if (type != "default" && type != "linear" && type != "llama3") {
    return FieldError("rope_scaling.rope_type",
                      absl::StrCat("'", type, "' is not supported (supported: default, linear, llama3)"));
  }
  c.rope_scaling.type = type;
  // rope_parameters may carry rope_theta too.
  auto theta = rs->find("rope_theta");
  if (theta != rs->end() && theta->is_number()) c.rope_theta = theta->get<double>();
  if (type == "default") return absl::OkStatus();
  auto f = rs->find("factor");
  if (f == rs->end() || !f->is_number() || f->get<double>() < 1.0) {
    return FieldError("rope_scaling.factor", "must be a number >= 1");
  }
  c.rope_scaling.factor = f->get<double>();
  if (type == "llama3") {
    for (auto [key, dst] : {std::pair{"low_freq_factor", &c.rope_scaling.low_freq_factor},
                            std::pair{"high_freq_factor", &c.rope_scaling.high_freq_factor}}) {
      auto v = rs->find(key);
      if (v == rs->end() || !v->is_number()) {
        return FieldError(absl::StrCat("rope_scaling.", key), "is required for llama3 rope");
      }
      *dst = v->get<double>();
    }
    auto o = rs->find("original_max_position_embeddings");
    if (o == rs->end() || !o->is_number_integer()) {
      return FieldError("rope_scaling.original_max_position_embeddings",
                        "is required for llama3 rope");
    }
    c.rope_scaling.original_max_position_embeddings = o->get<int64_t>();
    if (c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor) {
      return FieldError("rope_scaling.high_freq_factor", "must be greater than low_freq_factor");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json) {
  if (auto s = common::CheckJsonNesting("config.json", config_json); !s.ok()) return s;
  json j = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json is not a JSON object");
  }
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch != j.end() && arch->is_array() && !arch->empty() && (*arch)[0].is_string()) {
    c.architecture_name = (*arch)[0].get<std::string>();
  }
  if (auto s = GetString(j, "model_type", &c.model_type); !s.ok()) return s;
  if (c.architecture_name.empty()) {
    // Fall back on model_type the way AutoModel does.
    if (c.model_type == "bert") c.architecture_name = "BertModel";
    else if (c.model_type == "llama") c.architecture_name = "LlamaForCausalLM";
    else if (c.model_type == "mistral") c.architecture_name = "MistralForCausalLM";
    else if (c.model_type == "qwen2") c.architecture_name = "Qwen2ForCausalLM";
  }
  static const char* kDecoders[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
  static const char* kEncoders[] = {"BertModel", "BertForMaskedLM", "BertForPreTraining"};
  bool known = false;
  for (const char* a : kDecoders) {
    if (c.architecture_name == a) {
      c.architecture = Architecture::kLlamaForCausalLM;
      known = true;
    }
  }
  for (const char* a : kEncoders) {
    if (c.architecture_name == a) {
      c.architecture = Architecture::kBertModel;
      known = true;
    }
  }
  if (!known) {
    return FieldError("architectures",
                      absl::StrCat("'", c.architecture_name,
                                   "' is not supported (supported: LlamaForCausalLM, "
                                   "MistralForCausalLM, Qwen2ForCausalLM, BertModel)"));
  }

  const bool is_decoder = c.architecture == Architecture::kLlamaForCausalLM;
  if (!is_decoder) c.hidden_act = "gelu";
  for (auto [key, dst] : {std::pair{"vocab_size", &c.vocab_size},
                          std::pair{"hidden_size", &c.hidden_size},
                          std::pair{"intermediate_size", &c.intermediate_size},
                          std::pair{"num_hidden_layers", &c.num_hidden_layers},
                          std::pair{"num_attention_heads", &c.num_attention_heads},
                          std::pair{"num_key_value_heads", &c.num_key_value_heads},
                          std::pair{"head_dim", &c.head_dim},
                          std::pair{"max_position_embeddings", &c.max_position_embeddings},
                          std::pair{"type_vocab_size", &c.type_vocab_size}}) {
    if (auto s = GetInt(j, key, dst); !s.ok()) return s;
  }
  for (auto [key, dst] : {std::pair{"vocab_size", c.vocab_size},
                          std::pair{"hidden_size", c.hidden_size},
                          std::pair{"intermediate_size", c.intermediate_size},
                          std::pair{"num_hidden_layers", c.num_hidden_layers},
                          std::pair{"num_attention_heads", c.num_attention_heads}}) {
    if (dst <= 0) return FieldError(key, "must be a positive integer");
  }
  // Upper bounds far above any published model (the largest have ~260k vocabularies, 16k
  // hidden, 53k intermediate, 126 layers, 128 heads of 256, 10M positions): a config beyond
  // them is refused here, in microseconds, instead of sizing a skeleton or a loop by it.
  for (auto [key, value, max] :
       {std::tuple{"vocab_size", c.vocab_size, int64_t{1} << 22},
        std::tuple{"hidden_size", c.hidden_size, int64_t{1} << 16},
        std::tuple{"intermediate_size", c.intermediate_size, int64_t{1} << 18},
        std::tuple{"num_hidden_layers", c.num_hidden_layers, int64_t{1} << 10},
        std::tuple{"num_attention_heads", c.num_attention_heads, int64_t{1} << 10},
        std::tuple{"num_key_value_heads", c.num_key_value_heads, int64_t{1} << 10},
        std::tuple{"head_dim", c.head_dim, int64_t{1} << 10},
        std::tuple{"max_position_embeddings", c.max_position_embeddings, int64_t{1} << 24},
        std::tuple{"type_vocab_size", c.type_vocab_size, int64_t{1} << 10}}) {
    if (value > max) {
      return FieldError(key, absl::StrCat("is ", value, "; at most ", max,
                                          " is accepted (no real model is this large)"));
    }
  }
  // Present but not positive is an error; absent takes the default below.
  for (const char* key : {"max_position_embeddings", "head_dim", "num_key_value_heads"}) {
    const auto it = j.find(key);
    if (it != j.end() && !it->is_null() && it->get<int64_t>() <= 0) {
      return FieldError(key, "must be a positive integer when present");
    }
  }
  if (c.type_vocab_size < 0) return FieldError("type_vocab_size", "must not be negative");
  if (c.num_key_value_heads <= 0) c.num_key_value_heads = c.num_attention_heads;
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError("num_key_value_heads", "must divide num_attention_heads");
  }
  if (c.head_dim <= 0) {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return FieldError("num_attention_heads", "must divide hidden_size when head_dim is absent");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) return FieldError("head_dim", "must be even for rotary embeddings");
  if (c.max_position_embeddings <= 0) c.max_position_embeddings = 2048;

  if (auto s = GetString(j, "hidden_act", &c.hidden_act); !s.ok()) return s;
  if (is_decoder && c.hidden_act != "silu") {
    return FieldError("hidden_act", absl::StrCat("'", c.hidden_act, "' is not supported (silu)"));
  }
  if (!is_decoder && c.hidden_act != "gelu") {
    return FieldError("hidden_act", absl::StrCat("'", c.hidden_act, "' is not supported (gelu)"));
  }
  if (auto s = GetString(j, "torch_dtype", &c.torch_dtype); !s.ok()) return s;
  if (c.torch_dtype.empty()) {
    if (auto s = GetString(j, "dtype", &c.torch_dtype); !s.ok()) return s;
  }
  if (auto s = GetDouble(j, "rms_norm_eps", &c.rms_norm_eps); !s.ok()) return s;
  if (auto s = GetDouble(j, "rope_theta", &c.rope_theta); !s.ok()) return s;
  if (auto s = GetDouble(j, "layer_norm_eps", &c.layer_norm_eps); !s.ok()) return s;
  if (auto s = ParseRopeScaling(j, c); !s.ok()) return s;
  if (auto s = GetBool(j, "tie_word_embeddings", &c.tie_word_embeddings); !s.ok()) return s;
  if (auto s = GetBool(j, "mlp_bias", &c.mlp_bias); !s.ok()) return s;
  if (c.model_type == "qwen2") {
    c.attention_bias = true;  // Qwen2 always has q/k/v bias and never an o_proj bias
    c.o_proj_bias = false;
  } else {
    if (auto s = GetBool(j, "attention_bias", &c.attention_bias); !s.ok()) return s;
    c.o_proj_bias = c.attention_bias;
  }
  // Only Qwen2 gates the sliding window behind use_sliding_window.
  bool use_sliding = c.model_type != "qwen2";
  if (auto s = GetBool(j, "use_sliding_window", &use_sliding); !s.ok()) return s;
  int64_t window = 0;
  if (auto s = GetInt(j, "sliding_window", &window); !s.ok()) return s;
  if (use_sliding && window > 0) c.sliding_window = window;

  if (auto s = GetOptionalId(j, "bos_token_id", &c.bos_token_id); !s.ok()) return s;
  if (auto s = GetIdList(j, "eos_token_id", &c.eos_token_ids); !s.ok()) return s;
  if (auto s = GetOptionalId(j, "pad_token_id", &c.pad_token_id); !s.ok()) return s;
  if (!generation_config_json.empty()) {
    if (auto s = common::CheckJsonNesting("generation_config.json", generation_config_json);
        !s.ok()) {
      return s;
    }
    json g = json::parse(generation_config_json, nullptr, false);
    if (g.is_discarded() || !g.is_object()) {
      return absl::InvalidArgumentError("generation_config.json is not a JSON object");
    }
    if (auto s = GetOptionalId(g, "bos_token_id", &c.bos_token_id); !s.ok()) return s;
    if (auto s = GetIdList(g, "eos_token_id", &c.eos_token_ids); !s.ok()) return s;
    if (auto s = GetOptionalId(g, "pad_token_id", &c.pad_token_id); !s.ok()) return s;
  }
  auto q = j.find("quantization_config");
  if (q != j.end() && !q->is_null()) {
    if (!q->is_object()) return FieldError("quantization_config", "must be an object");
    c.quantization_config_json = q->dump();
  }
  return c;
}

}  // namespace quantserve::models

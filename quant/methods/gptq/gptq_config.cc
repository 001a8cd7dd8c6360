#include "quant/methods/gptq/gptq_config.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace quantserve::quant {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

const std::vector<std::string> kDatasets = {"wikitext2", "c4", "c4-new"};

// The key's value, null included (Python passes an explicit null as None), or null when absent.
const Json* Raw(const ConfigReader& r, const std::string& key) {
  auto it = r.object().find(key);
  return it == r.object().end() ? nullptr : &*it;
}

// Fields annotated without Optional: absent keeps the default; null is a type error.
absl::Status StrictBool(const ConfigReader& r, const std::string& key, bool* out) {
  const Json* v = Raw(r, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return r.Invalid(key, "true or false");
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status StrictInt(const ConfigReader& r, const std::string& key, int64_t* out) {
  const Json* v = Raw(r, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number_integer()) return r.Invalid(key, "an integer");
  *out = v->get<int64_t>();
  return absl::OkStatus();
}

absl::Status StrictNumber(const ConfigReader& r, const std::string& key, double* out) {
  const Json* v = Raw(r, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) return r.Invalid(key, "a number");
  *out = v->get<double>();
  return absl::OkStatus();
}

absl::Status OptionalInt(const ConfigReader& r, const std::string& key,
                         std::optional<int64_t>* out) {
  if (!r.Has(key)) return absl::OkStatus();
  int64_t value = 0;
  QS_RETURN_IF_ERROR(r.Int(key, &value));
  *out = value;
  return absl::OkStatus();
}

template <typename T>
OrderedJson OrNull(const std::optional<T>& v) {
  return v.has_value() ? OrderedJson(*v) : OrderedJson(nullptr);
}

// GPTQConfig.post_init (quantization_config.py:738).
absl::Status PostInit(const ConfigReader& r, GptqConfig& c) {
  if (c.bits != 2 && c.bits != 3 && c.bits != 4 && c.bits != 8) {
    return r.Invalid("bits", "one of 2, 3, 4, 8");
  }
  if (c.group_size != -1 && c.group_size <= 0) {
    return r.Invalid("group_size", "-1 (per output channel) or greater than 0");
  }
  if (!(0 < c.damp_percent && c.damp_percent < 1)) {
    return r.Invalid("damp_percent", "between 0 and 1, exclusive");
  }
  if (c.dataset.is_string() && std::find(kDatasets.begin(), kDatasets.end(),
                                         c.dataset.get<std::string>()) == kDatasets.end()) {
    return r.Invalid("dataset", "a list of strings or one of " + QuotedList(kDatasets));
  }
  // transformers warns and turns act_group_aware off: GAR only applies without act-order.
  if (c.desc_act && c.act_group_aware) c.act_group_aware = false;
  if (c.backend.empty()) c.backend = "auto";
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseGptqInit(const ConfigReader& r, const GptqInitArgs& args, GptqConfig* out) {
  GptqConfig& c = *out;
  // bits (required for GPTQConfig; AwqConfig passes its default 4 when the key is absent).
  const Json* bits = args.bits.has_value() ? &*args.bits : Raw(r, "bits");
  if (bits == nullptr) {
    return absl::InvalidArgumentError("quantization_config.bits is required (one of 2, 3, 4, 8)");
  }
  if (!bits->is_number_integer()) return r.Invalid("bits", "an integer");
  c.bits = bits->get<int64_t>();

  c.tokenizer = r.object().value("tokenizer", Json(nullptr));
  if (const Json* d = Raw(r, "dataset"); d != nullptr) {
    bool ok = d->is_null() || d->is_string() || d->is_array();
    if (d->is_array()) {
      ok = std::all_of(d->begin(), d->end(), [](const Json& e) { return e.is_string(); });
    }
    if (!ok) return r.Invalid("dataset", "a list of strings or one of " + QuotedList(kDatasets));
    c.dataset = *d;
  }
  QS_RETURN_IF_ERROR(StrictInt(r, "group_size", &c.group_size));
  QS_RETURN_IF_ERROR(StrictNumber(r, "damp_percent", &c.damp_percent));
  QS_RETURN_IF_ERROR(StrictBool(r, "desc_act", &c.desc_act));
  QS_RETURN_IF_ERROR(StrictBool(r, "act_group_aware", &c.act_group_aware));
  QS_RETURN_IF_ERROR(StrictBool(r, "sym", &c.sym));
  QS_RETURN_IF_ERROR(StrictBool(r, "true_sequential", &c.true_sequential));

  // format.lower(), then the legacy checkpoint_format (when not null) overrides it.
  if (!args.format.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization_config.format must be a string (got ", args.format.dump(), ")"));
  }
  c.format = absl::AsciiStrToLower(args.format.get<std::string>());
  if (r.Has("checkpoint_format")) {
    std::string legacy;
    QS_RETURN_IF_ERROR(r.String("checkpoint_format", &legacy));
    c.format = absl::AsciiStrToLower(legacy);
  }

  if (const Json* m = Raw(r, "meta"); m != nullptr) {
    if (!m->is_null() && !m->is_object()) return r.Invalid("meta", "an object or null");
    c.meta = *m;
  }
  // backend.lower() when a string; None becomes "auto" in post_init (empty here).
  if (!args.backend.is_null() && !args.backend.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantization_config.backend must be a string (got ", args.backend.dump(), ")"));
  }
  c.backend = args.backend.is_string() ? absl::AsciiStrToLower(args.backend.get<std::string>())
                                       : std::string();

  QS_RETURN_IF_ERROR(OptionalInt(r, "model_seqlen", &c.model_seqlen));
  if (r.Has("block_name_to_quantize")) {
    std::string block;
    QS_RETURN_IF_ERROR(r.String("block_name_to_quantize", &block));
    c.block_name_to_quantize = block;
  }
  QS_RETURN_IF_ERROR(
      r.StringList("module_name_preceding_first_block", &c.module_name_preceding_first_block));
  QS_RETURN_IF_ERROR(StrictInt(r, "batch_size", &c.batch_size));
  QS_RETURN_IF_ERROR(OptionalInt(r, "pad_token_id", &c.pad_token_id));
  QS_RETURN_IF_ERROR(OptionalInt(r, "max_input_length", &c.max_input_length));
  QS_RETURN_IF_ERROR(StrictBool(r, "cache_block_outputs", &c.cache_block_outputs));
  if (r.Has("modules_in_block_to_quantize")) {
    const Json& v = r.object().at("modules_in_block_to_quantize");
    const char* what = "a list of lists of module names (e.g. [[\"self_attn.q_proj\"]])";
    if (!v.is_array()) return r.Invalid("modules_in_block_to_quantize", what);
    std::vector<std::vector<std::string>> lists;
    for (const Json& group : v) {
      if (!group.is_array()) return r.Invalid("modules_in_block_to_quantize", what);
      std::vector<std::string> names;
      for (const Json& name : group) {
        if (!name.is_string()) return r.Invalid("modules_in_block_to_quantize", what);
        names.push_back(name.get<std::string>());
      }
      lists.push_back(std::move(names));
    }
    c.modules_in_block_to_quantize = std::move(lists);
  }
  return absl::OkStatus();
}

absl::StatusOr<GptqConfig> GptqConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::Parse(json));
  GptqInitArgs args;
  if (const Json* f = Raw(r, "format"); f != nullptr) args.format = *f;
  if (const Json* b = Raw(r, "backend"); b != nullptr) args.backend = *b;
  // A wrong-typed bits fails post_init's membership test in Python; say so with the values.
  if (const Json* b = Raw(r, "bits"); b != nullptr && !b->is_number_integer()) {
    return r.Invalid("bits", "one of 2, 3, 4, 8");
  }
  GptqConfig c;
  QS_RETURN_IF_ERROR(ParseGptqInit(r, args, &c));
  QS_RETURN_IF_ERROR(PostInit(r, c));
  return c;
}

OrderedJson GptqConfig::ToOrderedJson(const std::string& quant_method) const {
  OrderedJson j;
  j["quant_method"] = quant_method;
  j["bits"] = bits;
  j["tokenizer"] = tokenizer;
  j["dataset"] = dataset;
  j["group_size"] = group_size;
  j["damp_percent"] = damp_percent;
  j["desc_act"] = desc_act;
  j["act_group_aware"] = act_group_aware;
  j["sym"] = sym;
  j["true_sequential"] = true_sequential;
  j["format"] = format;
  j["meta"] = meta;
  j["backend"] = backend;
  j["model_seqlen"] = OrNull(model_seqlen);
  j["block_name_to_quantize"] = OrNull(block_name_to_quantize);
  j["module_name_preceding_first_block"] = OrNull(module_name_preceding_first_block);
  j["batch_size"] = batch_size;
  j["pad_token_id"] = OrNull(pad_token_id);
  j["max_input_length"] = OrNull(max_input_length);
  j["cache_block_outputs"] = cache_block_outputs;
  j["modules_in_block_to_quantize"] = OrNull(modules_in_block_to_quantize);
  return j;
}

std::string GptqConfig::ToJson() const {
  OrderedJson j = ToOrderedJson("gptq");
  j["checkpoint_format"] = format;  // GPTQConfig.to_dict keeps the legacy key
  return j.dump();
}

}  // namespace quantserve::quant

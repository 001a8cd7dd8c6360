#include "quant/methods/bitsandbytes/bitsandbytes_config.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {
namespace {

// getattr(torch, name) for the floating dtypes a 4-bit compute dtype can be. transformers
// accepts any torch dtype attribute here, but an integer compute dtype makes Linear4bit cast
// the activations to integers, so we refuse it up front.
const std::vector<std::pair<std::string, c10::ScalarType>>& ComputeDtypes() {
  static const auto* kTable = new std::vector<std::pair<std::string, c10::ScalarType>>{
      {"float32", c10::ScalarType::Float},     {"float", c10::ScalarType::Float},
      {"bfloat16", c10::ScalarType::BFloat16}, {"float16", c10::ScalarType::Half},
      {"half", c10::ScalarType::Half},         {"float64", c10::ScalarType::Double},
      {"double", c10::ScalarType::Double},
  };
  return *kTable;
}

// transformers' list for bnb_4bit_quant_storage strings.
const std::vector<std::pair<std::string, c10::ScalarType>>& StorageDtypes() {
  static const auto* kTable = new std::vector<std::pair<std::string, c10::ScalarType>>{
      {"float16", c10::ScalarType::Half},   {"float32", c10::ScalarType::Float},
      {"int8", c10::ScalarType::Char},      {"uint8", c10::ScalarType::Byte},
      {"float64", c10::ScalarType::Double}, {"bfloat16", c10::ScalarType::BFloat16},
  };
  return *kTable;
}

std::vector<std::string> Names(const std::vector<std::pair<std::string, c10::ScalarType>>& t) {
  std::vector<std::string> out;
  for (const auto& [name, dtype] : t) out.push_back(name);
  return out;
}

absl::Status ReadDtype(const ConfigReader& r, const std::string& key,
                       const std::vector<std::pair<std::string, c10::ScalarType>>& table,
                       c10::ScalarType* out) {
  if (!r.Has(key)) return absl::OkStatus();
  const std::string what = "a dtype name, one of " + QuotedList(Names(table));
  const auto& v = r.object().at(key);
  if (!v.is_string()) return r.Invalid(key, what);
  for (const auto& [name, dtype] : table) {
    if (v.get<std::string>() == name) {
      *out = dtype;
      return absl::OkStatus();
    }
  }
  return r.Invalid(key, what);
}

}  // namespace

std::string BnbDtypeName(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return "float32";
    case c10::ScalarType::BFloat16:
      return "bfloat16";
    case c10::ScalarType::Half:
      return "float16";
    case c10::ScalarType::Double:
      return "float64";
    case c10::ScalarType::Char:
      return "int8";
    case c10::ScalarType::Byte:
      return "uint8";
    default:
      return c10::toString(dtype);
  }
}

absl::StatusOr<BitsAndBytesConfig> BitsAndBytesConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::Parse(json));
  BitsAndBytesConfig c;
  QS_RETURN_IF_ERROR(r.Bool("load_in_8bit", &c.load_in_8bit));
  QS_RETURN_IF_ERROR(r.Bool("load_in_4bit", &c.load_in_4bit));
  if (c.load_in_8bit && c.load_in_4bit) {
    return absl::InvalidArgumentError(
        "quantization_config.load_in_4bit and quantization_config.load_in_8bit are both true, "
        "but only one can be used at the same time");
  }
  if (!c.load_in_8bit && !c.load_in_4bit) {
    return absl::InvalidArgumentError(
        "quantization_config for bitsandbytes must set one of load_in_8bit or load_in_4bit to "
        "true (transformers cannot pick a bitsandbytes quantizer otherwise)");
  }
  QS_RETURN_IF_ERROR(r.Number("llm_int8_threshold", &c.llm_int8_threshold,
                              /*require_float=*/true));
  QS_RETURN_IF_ERROR(r.StringList("llm_int8_skip_modules", &c.llm_int8_skip_modules));
  QS_RETURN_IF_ERROR(
      r.Bool("llm_int8_enable_fp32_cpu_offload", &c.llm_int8_enable_fp32_cpu_offload));
  QS_RETURN_IF_ERROR(r.Bool("llm_int8_has_fp16_weight", &c.llm_int8_has_fp16_weight));
  QS_RETURN_IF_ERROR(
      ReadDtype(r, "bnb_4bit_compute_dtype", ComputeDtypes(), &c.bnb_4bit_compute_dtype));
  if (r.Has("bnb_4bit_quant_type") && !r.object().at("bnb_4bit_quant_type").is_string()) {
    return r.Invalid("bnb_4bit_quant_type", "a string");
  }
  QS_RETURN_IF_ERROR(r.Enum("bnb_4bit_quant_type", &c.bnb_4bit_quant_type, {"fp4", "nf4"}));
  QS_RETURN_IF_ERROR(r.Bool("bnb_4bit_use_double_quant", &c.bnb_4bit_use_double_quant));
  QS_RETURN_IF_ERROR(
      ReadDtype(r, "bnb_4bit_quant_storage", StorageDtypes(), &c.bnb_4bit_quant_storage));
  return c;
}

std::string BitsAndBytesConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["quant_method"] = "bitsandbytes";
  j["_load_in_8bit"] = load_in_8bit;
  j["_load_in_4bit"] = load_in_4bit;
  j["llm_int8_threshold"] = llm_int8_threshold;
  j["llm_int8_skip_modules"] = nullptr;
  if (llm_int8_skip_modules.has_value()) j["llm_int8_skip_modules"] = *llm_int8_skip_modules;
  j["llm_int8_enable_fp32_cpu_offload"] = llm_int8_enable_fp32_cpu_offload;
  j["llm_int8_has_fp16_weight"] = llm_int8_has_fp16_weight;
  j["bnb_4bit_quant_type"] = bnb_4bit_quant_type;
  j["bnb_4bit_use_double_quant"] = bnb_4bit_use_double_quant;
  j["bnb_4bit_compute_dtype"] = BnbDtypeName(bnb_4bit_compute_dtype);
  j["bnb_4bit_quant_storage"] = BnbDtypeName(bnb_4bit_quant_storage);
  j["load_in_4bit"] = load_in_4bit;
  j["load_in_8bit"] = load_in_8bit;
  return j.dump();
}

}  // namespace quantserve::quant

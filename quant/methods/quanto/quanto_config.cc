#include "quant/methods/quanto/quanto_config.h"

#include <nlohmann/json.hpp>

#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {

absl::StatusOr<QuantoConfig> QuantoConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::Parse(json));
  QuantoConfig c;
  const std::vector<std::string> weights = {"float8", "int8", "int4", "int2"};
  // An explicit null is not a default here: transformers stores None and post_init rejects it.
  auto w = reader.object().find("weights");
  if (w != reader.object().end() && w->is_null()) {
    return reader.Invalid("weights", "one of " + QuotedList(weights));
  }
  QS_RETURN_IF_ERROR(reader.Enum("weights", &c.weights, weights));
  if (reader.Has("activations")) {
    const std::vector<std::string> activations = {"int8", "float8"};
    std::string a;
    if (!reader.Enum("activations", &a, activations).ok()) {
      return reader.Invalid("activations", "null or one of " + QuotedList(activations));
    }
    c.activations = a;
  }
  QS_RETURN_IF_ERROR(reader.StringList("modules_to_not_convert", &c.modules_to_not_convert));
  return c;
}

std::string QuantoConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["quant_method"] = "quanto";
  j["weights"] = weights;
  j["activations"] =
      activations.has_value() ? nlohmann::ordered_json(*activations) : nlohmann::ordered_json();
  j["modules_to_not_convert"] = modules_to_not_convert.has_value()
                                    ? nlohmann::ordered_json(*modules_to_not_convert)
                                    : nlohmann::ordered_json();
  return j.dump();
}

}  // namespace quantserve::quant

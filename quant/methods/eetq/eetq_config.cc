#include "quant/methods/eetq/eetq_config.h"

#include <nlohmann/json.hpp>

#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {

absl::StatusOr<EetqConfig> EetqConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::Parse(json));
  EetqConfig c;
  const std::vector<std::string> kWeights = {"int8"};
  // post_init: `weights not in ["int8"]` also refuses None, which the reader treats as absent.
  if (r.object().contains("weights") && r.object()["weights"].is_null()) {
    return r.Invalid("weights", "one of " + QuotedList(kWeights));
  }
  QS_RETURN_IF_ERROR(r.Enum("weights", &c.weights, kWeights));
  QS_RETURN_IF_ERROR(r.StringList("modules_to_not_convert", &c.modules_to_not_convert));
  return c;
}

std::string EetqConfig::ToJson() const {
  nlohmann::json j;
  j["quant_method"] = "eetq";
  j["weights"] = weights;
  j["modules_to_not_convert"] =
      modules_to_not_convert.has_value() ? nlohmann::json(*modules_to_not_convert) : nullptr;
  return j.dump();
}

}  // namespace quantserve::quant

#include "quant/methods/fbgemm_fp8/fbgemm_fp8_config.h"

#include <nlohmann/json.hpp>

#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {

absl::StatusOr<FbgemmFp8Config> FbgemmFp8Config::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::Parse(json));
  FbgemmFp8Config c;
  // The reader treats null as absent; transformers keeps None and fails filling the buffer.
  if (r.object().contains("activation_scale_ub") && r.object()["activation_scale_ub"].is_null()) {
    return r.Invalid("activation_scale_ub", "a number");
  }
  QS_RETURN_IF_ERROR(r.Number("activation_scale_ub", &c.activation_scale_ub));
  QS_RETURN_IF_ERROR(r.StringList("modules_to_not_convert", &c.modules_to_not_convert));
  return c;
}

std::string FbgemmFp8Config::ToJson() const {
  nlohmann::json j;
  j["quant_method"] = "fbgemm_fp8";
  j["activation_scale_ub"] = activation_scale_ub;
  j["modules_to_not_convert"] =
      modules_to_not_convert.has_value() ? nlohmann::json(*modules_to_not_convert) : nullptr;
  return j.dump();
}

}  // namespace quantserve::quant

#include "quant/methods/aqlm/aqlm_config.h"

#include <nlohmann/json.hpp>

#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {

absl::StatusOr<AqlmConfig> AqlmConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::Parse(json));
  AqlmConfig c;
  // AqlmConfig.post_init (quantization_config.py:902): isinstance(x, int), so an explicit null
  // (None) is refused too.
  for (auto [key, out] : {std::pair{"in_group_size", &c.in_group_size},
                          std::pair{"out_group_size", &c.out_group_size},
                          std::pair{"num_codebooks", &c.num_codebooks},
                          std::pair{"nbits_per_codebook", &c.nbits_per_codebook}}) {
    auto it = r.object().find(key);
    if (it == r.object().end()) continue;
    if (!it->is_number_integer()) return r.Invalid(key, "an integer");
    *out = it->get<int64_t>();
  }
  std::optional<std::vector<std::string>> skip;
  auto it = r.object().find("linear_weights_not_to_quantize");
  if (it != r.object().end() && !it->is_null()) {
    if (!it->is_array()) {
      return r.Invalid("linear_weights_not_to_quantize",
                       "a list of weight names (e.g. [\"lm_head.weight\"])");
    }
    QS_RETURN_IF_ERROR(r.StringList("linear_weights_not_to_quantize", &skip));
  }
  c.linear_weights_not_to_quantize = skip.value_or(std::vector<std::string>{});
  return c;
}

std::string AqlmConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["quant_method"] = "aqlm";
  j["in_group_size"] = in_group_size;
  j["out_group_size"] = out_group_size;
  j["num_codebooks"] = num_codebooks;
  j["nbits_per_codebook"] = nbits_per_codebook;
  j["linear_weights_not_to_quantize"] = linear_weights_not_to_quantize;
  return j.dump();
}

}  // namespace quantserve::quant

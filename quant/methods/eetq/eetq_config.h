#pragma once
// EetqConfig: transformers' `EetqConfig` (quant_method "eetq"), parsed from the HF
// quantization_config JSON with its defaults and its post_init validation.
//
//   weights                 "int8" (the only value transformers accepts; ValueError otherwise)
//   modules_to_not_convert  list of module-name patterns to keep in float (None)
//
// Unknown keys are ignored, as `EetqConfig(**kwargs)` does.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

struct EetqConfig {
  std::string weights = "int8";
  std::optional<std::vector<std::string>> modules_to_not_convert;

  // INVALID_ARGUMENT naming the field for a value transformers rejects, including JSON null for
  // `weights` (None is not in ["int8"]).
  static absl::StatusOr<EetqConfig> Parse(const std::string& json);
  // transformers' to_dict(): {"quant_method", "weights", "modules_to_not_convert"}.
  std::string ToJson() const;
};

}  // namespace quantserve::quant

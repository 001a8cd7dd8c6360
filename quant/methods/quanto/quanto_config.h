#pragma once
// QuantoConfig: transformers 5.23's QuantoConfig (quant_method "quanto", optimum-quanto).
//
//   weights                 "int8" (default) | "float8" | "int4" | "int2"
//   activations             null (default) | "int8" | "float8"
//   modules_to_not_convert  null (default: transformers' default skips) | list of patterns;
//                           a list REPLACES the default skips (lm_head, tied, last parameter)
//
// Parse applies QuantoConfig.post_init's checks; a null or non-string `weights` is refused
// like a wrong name (transformers' `weights not in accepted_weights`). Unknown keys are
// ignored, as transformers does. transformers refuses `activations` when quantizing at load;
// we accept it and calibrate the activation scales on LoadModelRequest.calibration_texts
// (see QuantoQuantizer).

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

struct QuantoConfig {
  std::string weights = "int8";
  std::optional<std::string> activations;  // unset = weight-only
  std::optional<std::vector<std::string>> modules_to_not_convert;

  // INVALID_ARGUMENT naming the field and its allowed values.
  static absl::StatusOr<QuantoConfig> Parse(const std::string& json);

  // transformers' to_dict() as JSON, in its key order:
  // {"quant_method":"quanto","weights":"int8","activations":null,"modules_to_not_convert":null}
  std::string ToJson() const;
};

}  // namespace quantserve::quant

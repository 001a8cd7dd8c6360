#pragma once
// FbgemmFp8Config: transformers' `FbgemmFp8Config` (quant_method "fbgemm_fp8"), parsed from the
// HF quantization_config JSON with its defaults.
//
//   activation_scale_ub     upper bound of the per-token activation absmax (1200.0)
//   modules_to_not_convert  list of module-name patterns to keep in float (None)
//
// transformers validates nothing (there is no post_init); a value it would only fail on at load
// (activation_scale_ub not a number, or None: `input_scale_ub.fill_(None)`) is INVALID_ARGUMENT
// here. Unknown keys are ignored, as `FbgemmFp8Config(**kwargs)` does.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

struct FbgemmFp8Config {
  double activation_scale_ub = 1200.0;
  std::optional<std::vector<std::string>> modules_to_not_convert;

  static absl::StatusOr<FbgemmFp8Config> Parse(const std::string& json);
  // transformers' to_dict(): {"quant_method", "activation_scale_ub", "modules_to_not_convert"}.
  std::string ToJson() const;
};

}  // namespace quantserve::quant

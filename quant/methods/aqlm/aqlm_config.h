#pragma once
// AqlmConfig: transformers 5.23's AqlmConfig (utils/quantization_config.py).
//
// Parse() applies post_init: the four sizes must be integers (isinstance int; null and floats
// are refused), linear_weights_not_to_quantize must be a list of strings (null -> []). Unknown
// keys are ignored. ToJson() is AqlmConfig.to_dict().

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

struct AqlmConfig {
  // Codebook vector size along the input dimension.
  int64_t in_group_size = 8;
  // Along the output dimension (1 recommended).
  int64_t out_group_size = 1;
  int64_t num_codebooks = 1;
  // Bits per code; a codebook holds 2^nbits_per_codebook vectors.
  int64_t nbits_per_codebook = 16;
  // Full parameter paths ending in ".weight" (e.g. "lm_head.weight") whose Linear is kept in
  // full precision; AQLM has no default skips.
  std::vector<std::string> linear_weights_not_to_quantize;

  static absl::StatusOr<AqlmConfig> Parse(const std::string& json);
  std::string ToJson() const;
};

}  // namespace quantserve::quant

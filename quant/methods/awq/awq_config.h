#pragma once
// AwqConfig: transformers 5.23's AwqConfig, which subclasses GPTQConfig.
//
// Parse() follows AwqConfig.__init__ + post_init: the format comes from "format", or the legacy
// "version" (lower-cased), or GPTQConfig's legacy "checkpoint_format", default "gemm"; backend
// "autoawq" becomes "auto" and backend "llm-awq" selects format "llm-awq" with backend "auto";
// format and backend must be in transformers' AwqFormat / AwqBackend lists. AWQ's post_init
// replaces GPTQConfig's, so bits, group_size, damp_percent and dataset are only type-checked.
// The fuse options of transformers 4.x (do_fuse, modules_to_fuse, fuse_max_seq_len,
// exllama_config) are ignored like any unknown key, as 5.23 does.
// ToJson() is AwqConfig.to_dict(): the GPTQConfig attributes plus zero_point,
// modules_to_not_convert and "version" (= format), without "checkpoint_format".

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/methods/gptq/gptq_config.h"

namespace quantserve::quant {

struct AwqConfig {
  // The attributes inherited from GPTQConfig, with AWQ's defaults (bits 4, format "gemm",
  // backend "auto"). format is one of AllowedFormats(), backend one of AllowedBackends().
  GptqConfig gptq = [] {
    GptqConfig c;
    c.bits = 4;
    c.format = "gemm";
    return c;
  }();
  bool zero_point = true;
  // Extra module names (transformers 5.x patterns) kept in full precision, on top of the
  // default skips.
  std::optional<std::vector<std::string>> modules_to_not_convert;

  static absl::StatusOr<AwqConfig> Parse(const std::string& json);
  std::string ToJson() const;

  static const std::vector<std::string>& AllowedFormats();
  static const std::vector<std::string>& AllowedBackends();
};

}  // namespace quantserve::quant

#pragma once
// Which Linear modules a method converts: transformers' name-matching rules, reproduced
// exactly (including their quirks) so the same config skips the same modules here.

#include <string>
#include <vector>

#include "models/module.h"

namespace quantserve::quant {

// transformers 5.x `should_convert_module` skip test: `pattern` matches `name` when the regex
// matches a prefix of `name` that ends at a module boundary (just before a '.', at the end, or
// just after a '.'), or when name.endswith(pattern). So "model.layers.1" matches
// "model.layers.1.mlp" but not "model.layers.11.mlp", and "layers.*" matches any layer.
// A pattern that is not a valid regex is compared literally.
bool MatchesSkipPattern(const std::string& name, const std::string& pattern);
bool MatchesAnySkipPattern(const std::string& name, const std::vector<std::string>& patterns);

// transformers' `get_keys_to_not_convert`: the output embedding ("lm_head"), both ends of every
// tied weight, and the model's last (non-tied) parameter with a ".weight" suffix removed.
std::vector<std::string> DefaultModulesToNotConvert(const models::Module& root);

// HQQ's linear tag: the dotted name without "model", "layers" and numeric parts
// ("model.layers.3.self_attn.q_proj" -> "self_attn.q_proj").
std::string HqqLinearTag(const std::string& name);

}  // namespace quantserve::quant

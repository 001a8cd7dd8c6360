#include "quant/methods/torchao/torchao_quantizer.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "quant/methods/torchao/torchao_linear.h"
#include "quant/module_match.h"

namespace quantserve::quant {
namespace {

QuantizerTraits TraitsFor(const TorchAoConfig& config) {
  QuantizerTraits t;
  t.requires_calibration = false;
  t.is_serializable = true;
  t.is_trainable = config.is_int8_class();
  t.requires_parameters_quantization = true;
  return t;
}

}  // namespace

TorchAoQuantizer::TorchAoQuantizer(TorchAoConfig config)
    : LinearQuantizer("torchao", TraitsFor(config), config.ToJson(), config.modules_to_not_convert),
      config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Quantizer>> TorchAoQuantizer::Create(
    const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(TorchAoConfig config, TorchAoConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new TorchAoQuantizer(std::move(config)));
}

absl::Status TorchAoQuantizer::ProcessModelBeforeWeightLoading(models::Module& root,
                                                               const LoadTarget& target) {
  tied_modules_.clear();
  in_features_.clear();
  for (const auto& p : root.NamedParameters()) {
    if (!p.slot.tied_to.empty() && absl::EndsWith(p.name, ".weight")) {
      tied_modules_.insert(p.name.substr(0, p.name.size() - 7));
    }
  }
  const std::vector<std::string> skip = ModulesToNotConvert(root);
  for (const auto& m : root.NamedModules()) {
    if (const auto* linear = dynamic_cast<const models::Linear*>(m.module)) {
      in_features_[m.name] = linear->options().in_features;
      continue;
    }
    // transformers also hands a non-Linear weight (a norm, an embedding) to quantize_ when an
    // FqnToConfig key names it; quantserve only quantizes Linear weights, so it says so.
    const std::string param = m.name.empty() ? "weight" : m.name + ".weight";
    bool has_weight = false;
    for (const auto& p : m.module->NamedParameters()) has_weight |= p.name == "weight";
    if (!has_weight || tied_modules_.count(m.name) != 0 || MatchesAnySkipPattern(param, skip) ||
        !(config_.MatchesFqn(m.name) || config_.MatchesFqn(param)) ||
        config_.ConfigFor(m.name) == nullptr) {
      continue;
    }
    return absl::UnimplementedError(absl::StrCat(
        "quantization_config.quant_type FqnToConfig applies ",
        config_.ConfigFor(m.name)->type_name(), " to '", param, "' of a ", m.module->type_name(),
        " module; quantserve quantizes Linear weights only (map it to null)"));
  }
  return LinearQuantizer::ProcessModelBeforeWeightLoading(root, target);
}

std::vector<std::string> TorchAoQuantizer::ModulesToNotConvert(const models::Module& root) const {
  // get_modules_to_not_convert(model, modules_to_not_convert, keep_in_fp32_modules): the
  // default skips only when the config gives no list.
  if (config_.modules_to_not_convert.has_value()) return *config_.modules_to_not_convert;
  return DefaultModulesToNotConvert(root);
}

bool TorchAoQuantizer::ShouldConvert(const std::string& name,
                                     const std::vector<std::string>& skip) const {
  if (tied_modules_.count(name) != 0) return false;
  if (MatchesAnySkipPattern(name + ".weight", skip)) return false;
  const TorchAoSchemeConfig* c = config_.ConfigFor(name);
  if (c == nullptr) return false;
  if (c->scheme == TorchAoScheme::kInt4WeightOnly) {
    auto it = in_features_.find(name);
    if (it != in_features_.end() && it->second % c->group_size != 0) return false;
  }
  return true;
}

double TorchAoQuantizer::EstimatedWeightBits(const std::string& name) const {
  const bool int4 =
      !config_.is_fqn_to_config && config_.single.scheme == TorchAoScheme::kInt4WeightOnly;
  return int4 ? 4.0 : 8.0;
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> TorchAoQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  const TorchAoSchemeConfig* c = config_.ConfigFor(name);
  if (c == nullptr) return absl::InternalError("no torchao config for " + name);
  if (c->scheme == TorchAoScheme::kInt4WeightOnly) {
    if (options.in_features % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("Int4WeightOnlyConfig cannot pack ", name,
                                                     ": in_features ", options.in_features,
                                                     " is odd"));
    }
    return std::shared_ptr<QuantizedLinear>(std::make_shared<TorchAoInt4Linear>(options, *c));
  }
  const auto [rows, cols] =
      c->weight_granularity.BlockSize(options.out_features, options.in_features);
  if (options.out_features % rows != 0 || options.in_features % cols != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(c->type_name(), " cannot quantize ", name, " [", options.out_features, ", ",
                     options.in_features, "] with blocks of [", rows, ", ", cols,
                     "] (in_features must be a multiple of the PerGroup group_size)"));
  }
  return std::shared_ptr<QuantizedLinear>(std::make_shared<TorchAoInt8Linear>(options, *c));
}

absl::Status RegisterTorchAoQuantizer(QuantizerRegistry& registry) {
  return registry.Register("torchao", &TorchAoQuantizer::Create);
}

}  // namespace quantserve::quant

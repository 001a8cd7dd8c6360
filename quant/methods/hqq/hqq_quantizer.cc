#include "quant/methods/hqq/hqq_quantizer.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "quant/methods/hqq/hqq_linear.h"
#include "quant/module_match.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {
namespace {

QuantizerTraits HqqTraits() {
  QuantizerTraits t;
  t.requires_calibration = false;
  t.is_serializable = true;
  t.is_trainable = true;
  t.requires_parameters_quantization = true;
  return t;
}

// The parameter a Linear's weight is tied to, or "".
std::string TiedTo(const models::Module& linear) {
  for (const auto& p : linear.NamedParameters()) {
    if (p.name == "weight") return p.slot.tied_to;
  }
  return "";
}

}  // namespace

HqqQuantizer::HqqQuantizer(HqqConfig config)
    : LinearQuantizer("hqq", HqqTraits(), config.ToJson(), std::nullopt),
      config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Quantizer>> HqqQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(HqqConfig config, HqqConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new HqqQuantizer(std::move(config)));
}

absl::Status HqqQuantizer::ProcessModelBeforeWeightLoading(models::Module& root,
                                                           const LoadTarget& target) {
  plan_.clear();
  not_converted_.clear();
  struct Dense {
    std::string name;
    std::string tag;
    std::string tied_to;
  };
  std::vector<Dense> linears;
  std::set<std::string> linear_tags;
  for (const auto& m : root.NamedModules()) {
    if (dynamic_cast<models::DenseLinear*>(m.module) == nullptr) continue;
    linears.push_back({m.name, HqqLinearTag(m.name), TiedTo(*m.module)});
    linear_tags.insert(linears.back().tag);
  }
  for (const auto& tag : config_.skip_modules) linear_tags.erase(tag);

  if (!config_.quant_config.has_value()) {
    std::vector<std::string> keys;
    bool any = false;
    for (const auto& [tag, params] : config_.tag_configs) {
      keys.push_back(tag);
      any = any || linear_tags.count(tag) != 0;
    }
    if (!any) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quantization_config: none of the per-tag hqq configs (", absl::StrJoin(keys, ", "),
          ") names a Linear tag of this model outside skip_modules (",
          absl::StrJoin(linear_tags, ", "),
          "); transformers would give every Linear the whole dict and HQQLinear would fail"));
    }
  }
  for (const Dense& l : linears) {
    const HqqWeightQuantParams* params = nullptr;
    if (config_.quant_config.has_value()) {
      if (linear_tags.count(l.tag) != 0) params = &*config_.quant_config;
    } else if (auto it = config_.tag_configs.find(l.tag);
               it != config_.tag_configs.end() && it->second.has_value()) {
      params = &*it->second;
    }
    if (params == nullptr) {
      not_converted_.push_back(l.name);
      continue;
    }
    if (!l.tied_to.empty()) {
      return absl::UnimplementedError(absl::StrCat(
          "hqq would quantize ", l.name, " (tag '", l.tag, "'), whose weight is tied to ",
          l.tied_to, "; quantizing a tied Linear is not supported: add \"", l.tag,
          "\" to skip_modules", config_.quant_config.has_value() ? "" : " and drop its entry"));
    }
    plan_.emplace(l.name, *params);
  }
  return LinearQuantizer::ProcessModelBeforeWeightLoading(root, target);
}

std::vector<std::string> HqqQuantizer::ModulesToNotConvert(const models::Module& root) const {
  return not_converted_;
}

bool HqqQuantizer::ShouldConvert(const std::string& name,
                                 const std::vector<std::string>& skip) const {
  return plan_.count(name) != 0;
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> HqqQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  auto it = plan_.find(name);
  if (it == plan_.end()) return absl::InternalError("hqq has no config for " + name);
  auto linear = HqqLinear::Create(options, it->second, target.checkpoint_is_prequantized);
  if (!linear.ok()) {
    return common::Annotate(linear.status(), absl::StrCat("hqq cannot quantize ", name, " (tag '",
                                                          HqqLinearTag(name), "')"));
  }
  return std::shared_ptr<QuantizedLinear>(*std::move(linear));
}

absl::Status RegisterHqqQuantizer(QuantizerRegistry& registry) {
  return registry.Register("hqq", &HqqQuantizer::Create);
}

}  // namespace quantserve::quant

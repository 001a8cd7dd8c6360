#include "quant/methods/torchao/torchao_quantizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "quant/methods/torchao/torchao_linear.h"
#include "quant/module_match.h"
#include "common/json_nesting.h"

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
  tied_params_.clear();
  checkpoint_metadata_ = target.checkpoint_metadata;
  state_names_.clear();
  for (const auto& p : root.NamedParameters()) {
    state_names_.push_back(p.name);
    if (!p.slot.tied_to.empty()) tied_params_.push_back(p.name);
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
  if (prequantized()) {
    // What the checkpoint holds decides: a weight saved as a plain tensor stays float.
    auto it = checkpoint_metadata_.find(name + ".weight");
    if (it != checkpoint_metadata_.end() &&
        common::JsonNesting(it->second) <= common::kMaxJsonNesting) {
      auto j = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.value("_type", "") == "Tensor") return false;
    }
  }
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
  const bool pre = target.checkpoint_is_prequantized;
  std::shared_ptr<TorchAoLinearBase> module;
  if (c->scheme == TorchAoScheme::kInt4WeightOnly) {
    if (options.in_features % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("Int4WeightOnlyConfig cannot pack ", name,
                                                     ": in_features ", options.in_features,
                                                     " is odd"));
    }
    module = std::make_shared<TorchAoInt4Linear>(options, *c, pre);
  }
  const auto [rows, cols] =
      c->weight_granularity.BlockSize(options.out_features, options.in_features);
  if (options.out_features % rows != 0 || options.in_features % cols != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(c->type_name(), " cannot quantize ", name, " [", options.out_features, ", ",
                     options.in_features, "] with blocks of [", rows, ", ", cols,
                     "] (in_features must be a multiple of the PerGroup group_size)"));
  }
  if (module == nullptr) module = std::make_shared<TorchAoInt8Linear>(options, *c, pre);
  if (pre) QS_RETURN_IF_ERROR(CheckMetadata(name, *module));
  return std::shared_ptr<QuantizedLinear>(std::move(module));
}

absl::Status TorchAoQuantizer::CheckMetadata(const std::string& name,
                                             const TorchAoLinearBase& module) const {
  auto it = checkpoint_metadata_.find(name + ".weight");
  if (it == checkpoint_metadata_.end()) return absl::OkStatus();  // tensors alone decide
  if (absl::Status s = common::CheckJsonNesting(
          absl::StrCat("safetensors metadata entry '", name, ".weight'"), it->second);
      !s.ok()) {
    return absl::DataLossError(s.message());
  }
  auto j = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::DataLossError(absl::StrCat("safetensors metadata entry '", name,
                                            ".weight' is not a JSON object: ", it->second));
  }
  const nlohmann::json expected = nlohmann::json::parse(module.MetadataJson().dump());
  const std::string type = j.value("_type", "");
  if (type != module.subclass_name()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint metadata says '", name, ".weight' is a torchao ", type.empty() ? "?" : type,
        " but quantization_config (", config_.ConfigFor(name)->type_name(), ") makes it ",
        module.subclass_name()));
  }
  const auto data = j.find("_data");
  if (data != j.end() && data->is_object() && data->contains("block_size") &&
      (*data)["block_size"] != expected["_data"]["block_size"]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint metadata gives '", name, ".weight' block_size ", (*data)["block_size"].dump(),
        " but quantization_config (", config_.ConfigFor(name)->type_name(), ") expects ",
        expected["_data"]["block_size"].dump()));
  }
  return absl::OkStatus();
}

std::map<std::string, std::string> TorchAoQuantizer::SafetensorsMetadata(
    const std::vector<std::string>& tensor_names) const {
  // torchao's flatten_tensor_state_dict over model.state_dict(): one entry per state-dict
  // name (a quantized weight once, as "<module>.weight"; tied weights included), listed in
  // "tensor_names" in model order whatever order the saved names come in.
  std::map<std::string, std::string> out;
  const std::set<std::string> given(tensor_names.begin(), tensor_names.end());
  std::set<std::string> listed;
  nlohmann::ordered_json names = nlohmann::ordered_json::array();
  nlohmann::ordered_json plain_json;
  plain_json["_type"] = "Tensor";
  const std::string plain = PythonJsonDumps(plain_json);
  auto add = [&](const std::string& name, std::string json) {
    if (!listed.insert(name).second) return;
    names.push_back(name);
    out[name] = std::move(json);
  };
  for (const std::string& n : state_names_) {
    if (absl::EndsWith(n, ".weight")) {
      const std::string module = n.substr(0, n.size() - 7);
      const auto* ao = dynamic_cast<const TorchAoLinearBase*>(converted_module(module));
      if (ao != nullptr && given.count(module + "._weight_qdata") != 0) {
        add(n, PythonJsonDumps(ao->MetadataJson()));
        continue;
      }
    }
    if (given.count(n) != 0 ||
        std::find(tied_params_.begin(), tied_params_.end(), n) != tied_params_.end()) {
      add(n, plain);
    }
  }
  for (const std::string& t : tensor_names) {  // anything the skeleton did not list
    std::string local;
    if (dynamic_cast<const TorchAoLinearBase*>(OwningModule(t, &local)) != nullptr &&
        absl::StartsWith(local, "_weight_")) {
      continue;
    }
    add(t, plain);
  }
  out["tensor_names"] = PythonJsonDumps(names);
  out["format"] = "pt";
  return out;
}

absl::Status RegisterTorchAoQuantizer(QuantizerRegistry& registry) {
  return registry.Register("torchao", &TorchAoQuantizer::Create);
}

}  // namespace quantserve::quant

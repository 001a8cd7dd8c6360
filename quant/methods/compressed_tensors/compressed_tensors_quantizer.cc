#include "quant/methods/compressed_tensors/compressed_tensors_quantizer.h"

#include <algorithm>
#include <optional>
#include <regex>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/compressed_tensors/compressed_tensors_config.h"
#include "quant/methods/compressed_tensors/compressed_tensors_linear.h"
#include "quant/module_match.h"

namespace quantserve::quant {
namespace {

constexpr char kWhyOffline[] =
    "compressed-tensors checkpoints are produced offline by llm-compressor (calibration "
    "with observers, GPTQ/AWQ modifiers), so transformers only loads pre-quantized "
    "compressed-tensors checkpoints (requires_calibration) and this checkpoint has no "
    "quantization_config. Quantize offline with llm-compressor (oneshot) and load the "
    "result, or use a method that quantizes at load: bitsandbytes, hqq, quanto, eetq, "
    "fbgemm_fp8, torchao";

// The compressed-tensors version whose layout SaveModel writes (ModelCompressor.update_config).
constexpr char kCompressedTensorsVersion[] = "0.20.0";

// A target or ignore string of utils/match.py.
struct Pattern {
  std::string text;
  std::optional<std::regex> re;  // "re:" patterns
  size_t scheme = 0;             // targets: index into config_groups
};

absl::StatusOr<Pattern> MakePattern(const std::string& text, const std::string& where) {
  Pattern p{text, std::nullopt, 0};
  if (absl::StartsWith(text, "re:")) {
    try {
      p.re = std::regex(text.substr(3), std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(absl::StrCat("quantization_config.", where, " entry \"",
                                                     text, "\" is not a valid regex (", e.what(),
                                                     ")"));
    }
  }
  return p;
}

// match_name: "re:" -> re.match (anchored at the start only), else the exact name.
bool MatchName(const std::string& name, const Pattern& p) {
  if (p.re) return std::regex_search(name, *p.re, std::regex_constants::match_continuous);
  return p.text == name;
}

// _match_class for an nn.Linear (MRO Linear, Module).
bool MatchClass(const Pattern& p) { return p.text == "Linear" || p.text == "Module"; }

bool IsMatch(const std::string& name, const Pattern& p) { return MatchName(name, p) || MatchClass(p); }

// infer_module_format for a Linear (COMPRESSION_FORMAT_PRIORITY, without the MX/NVFP4 rows).
std::string ModuleFormat(const CompressedTensorsConfig::QuantizationScheme& s) {
  if (s.format) return *s.format;
  const auto& w = s.weights;
  const auto& a = s.input_activations;
  if (w && w->type == "int" && a) return "int-quantized";
  if (w && w->type == "int" && w->num_bits >= 1 && w->num_bits <= 8 && !(a && a->type == "float")) {
    return "pack-quantized";
  }
  if (w && w->type == "float" && a) return "float-quantized";
  return "naive-quantized";
}

class CompressedTensorsQuantizer final : public LinearQuantizer {
 public:
  CompressedTensorsQuantizer(CompressedTensorsConfig config, std::vector<Pattern> targets,
                             std::vector<Pattern> ignore)
      : LinearQuantizer("compressed-tensors",
                        // quantizer_compressed_tensors.py: requires_calibration, serializable,
                        // trainable unless the (inference-only) FP8 kernel path is used.
                        {.requires_calibration = true,
                         .is_serializable = true,
                         .is_trainable = !config.use_optimized_inference},
                        NormalizedJson(config), std::vector<std::string>{}),
        config_(std::move(config)),
        targets_(std::move(targets)),
        ignore_(std::move(ignore)) {
    sorted_ = targets_;
    std::stable_sort(sorted_.begin(), sorted_.end(), [](const Pattern& a, const Pattern& b) {
      return std::make_tuple(absl::StrContains(a.text, "re:"), a.text) <
             std::make_tuple(absl::StrContains(b.text, "re:"), b.text);
    });
  }

  absl::Status ValidateEnvironment(const LoadTarget& target) override {
    if (!target.checkpoint_is_prequantized) return absl::FailedPreconditionError(kWhyOffline);
    return LinearQuantizer::ValidateEnvironment(target);
  }

  std::string SerializedConfigJson() const override {
    // ModelCompressor.update_config: model_dump + version, sparsity/transform configs,
    // json.dump(sort_keys=True).
    nlohmann::json j = nlohmann::json::parse(config_.ToJson());
    if (config_.quantization) {
      j["quantization_status"] = "compressed";
      j["sparsity_config"] = nlohmann::json::object();
      j["transform_config"] = nlohmann::json::object();
      j["version"] = kCompressedTensorsVersion;
    }
    return j.dump();
  }

 protected:
  absl::Status PrequantizedSupport() const override {
    if (!config_.quantization) return absl::OkStatus();
    const auto& q = *config_.quantization;
    if (q.kv_cache_scheme) {
      return absl::UnimplementedError(
          "compressed-tensors kv_cache_scheme (quantized attention) is not supported");
    }
    if (!q.config_groups.empty() && q.quantization_status != "compressed") {
      return absl::UnimplementedError(absl::StrCat(
          "compressed-tensors checkpoints with quantization_status \"", q.quantization_status,
          "\" (float weights fake-quantized at every forward) are not supported; only "
          "\"compressed\" checkpoints are"));
    }
    return absl::OkStatus();
  }

  bool ShouldConvert(const std::string& name, const std::vector<std::string>& skip) const override {
    if (MatchesAnySkipPattern(name, skip)) return false;  // tied weights
    return SchemeOf(name).has_value();
  }

  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override {
    const std::optional<size_t> index = SchemeOf(name);
    if (!index) return absl::InternalError("no compressed-tensors scheme for " + name);
    const auto& scheme = config_.quantization->config_groups[*index].second;
    QS_ASSIGN_OR_RETURN(auto m, CompressedTensorsLinear::Create(
                                    name, options,
                                    {.scheme = scheme,
                                     .format = ModuleFormat(scheme),
                                     .dequantize = config_.dequantize}));
    return std::shared_ptr<QuantizedLinear>(std::move(m));
  }

 private:
  static std::string NormalizedJson(const CompressedTensorsConfig& c) {
    // to_dict() plus the loading attributes, so a request's values reach the merge.
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(c.ToJson());
    j["dequantize"] = c.dequantize;
    j["use_optimized_inference"] = c.use_optimized_inference;
    return j.dump();
  }

  // match_named_modules + match_targets + _scheme_from_targets for the Linear `name`.
  std::optional<size_t> SchemeOf(const std::string& name) const {
    if (!std::any_of(targets_.begin(), targets_.end(),
                     [&](const Pattern& p) { return IsMatch(name, p); })) {
      return std::nullopt;
    }
    if (std::any_of(ignore_.begin(), ignore_.end(),
                    [&](const Pattern& p) { return IsMatch(name, p); })) {
      return std::nullopt;
    }
    for (const Pattern& p : sorted_) {
      if (MatchName(name, p)) return p.scheme;
    }
    for (const Pattern& p : sorted_) {
      if (MatchClass(p)) return p.scheme;
    }
    return std::nullopt;
  }

  CompressedTensorsConfig config_;
  std::vector<Pattern> targets_;  // target_to_scheme's keys in insertion order
  std::vector<Pattern> sorted_;   // sorted by ("re:" in target, target)
  std::vector<Pattern> ignore_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Quantizer>> CreateCompressedTensorsQuantizer(
    const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(CompressedTensorsConfig config, CompressedTensorsConfig::Parse(config_json));
  std::vector<Pattern> targets;
  std::vector<Pattern> ignore;
  if (config.quantization) {
    const auto& groups = config.quantization->config_groups;
    for (size_t g = 0; g < groups.size(); ++g) {
      for (const std::string& t : groups[g].second.targets) {
        // target_to_scheme[target] = scheme: a repeated target keeps its first position and
        // takes the later group's scheme.
        auto it = std::find_if(targets.begin(), targets.end(),
                               [&](const Pattern& p) { return p.text == t; });
        if (it != targets.end()) {
          it->scheme = g;
          continue;
        }
        QS_ASSIGN_OR_RETURN(
            Pattern p, MakePattern(t, absl::StrCat("config_groups.", groups[g].first, ".targets")));
        p.scheme = g;
        targets.push_back(std::move(p));
      }
    }
    for (const std::string& i : config.quantization->ignore.value_or(std::vector<std::string>{})) {
      QS_ASSIGN_OR_RETURN(Pattern p, MakePattern(i, "ignore"));
      ignore.push_back(std::move(p));
    }
  }
  return std::unique_ptr<Quantizer>(
      new CompressedTensorsQuantizer(std::move(config), std::move(targets), std::move(ignore)));
}

absl::Status RegisterCompressedTensorsQuantizer(QuantizerRegistry& registry) {
  // CompressedTensorsConfig.get_loading_attributes.
  return registry.Register("compressed-tensors", &CreateCompressedTensorsQuantizer,
                           {"dequantize", "use_optimized_inference"});
}

}  // namespace quantserve::quant

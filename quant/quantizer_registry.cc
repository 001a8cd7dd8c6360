#include "quant/quantizer_registry.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "quant/methods/none/none_quantizer.h"

namespace quantserve::quant {
namespace {

using json = nlohmann::json;

absl::StatusOr<std::string> MethodOf(const std::string& text, const char* where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": quantization_config is not a JSON object"));
  }
  // transformers dispatches on the load_in_* flags before quant_method (BitsAndBytesConfig
  // dicts from old checkpoints may lack quant_method).
  for (const char* flag : {"load_in_8bit", "load_in_4bit"}) {
    auto f = j.find(flag);
    if (f != j.end() && f->is_boolean() && f->get<bool>()) return std::string("bitsandbytes");
  }
  auto it = j.find("quant_method");
  if (it == j.end() || !it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": quantization_config.quant_method is required (a string)"));
  }
  return it->get<std::string>();
}

}  // namespace

absl::Status QuantizerRegistry::Register(const std::string& quant_method, Factory factory) {
  if (!factories_.emplace(quant_method, std::move(factory)).second) {
    return absl::AlreadyExistsError(absl::StrCat("quant_method '", quant_method,
                                                 "' is registered twice"));
  }
  return absl::OkStatus();
}

std::vector<std::string> QuantizerRegistry::methods() const {
  std::vector<std::string> out;
  for (const auto& [name, factory] : factories_) out.push_back(name);
  return out;
}

absl::StatusOr<std::unique_ptr<Quantizer>> QuantizerRegistry::Create(
    const std::string& request_json, const std::string& checkpoint_json) const {
  std::string method = "none";
  std::string config = "{\"quant_method\":\"none\"}";
  if (!checkpoint_json.empty()) {
    auto m = MethodOf(checkpoint_json, "config.json");
    if (!m.ok()) return m.status();
    method = *m;
    config = checkpoint_json;
  }
  if (!request_json.empty()) {
    auto m = MethodOf(request_json, "request");
    if (!m.ok()) return m.status();
    if (!checkpoint_json.empty() && *m != method) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quantization_config.quant_method '", *m, "' conflicts with the checkpoint's '", method,
          "' (a pre-quantized checkpoint can only be loaded with its own method)"));
    }
    method = *m;
    // Loading attributes overriding a checkpoint's config arrive with pre-quantized support.
    config = request_json;
  }
  auto it = factories_.find(method);
  if (it == factories_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization_config.quant_method '", method,
                     "' is not supported (supported: ", absl::StrJoin(methods(), ", "), ")"));
  }
  return it->second(config);
}

absl::Status RegisterBuiltinQuantizers(QuantizerRegistry& registry) {
  return registry.Register("none", &NoneQuantizer::Create);
}

const QuantizerRegistry& BuiltinQuantizerRegistry() {
  static const QuantizerRegistry* registry = [] {
    auto* r = new QuantizerRegistry();
    // Cannot fail on an empty registry.
    (void)RegisterBuiltinQuantizers(*r);
    return r;
  }();
  return *registry;
}

}  // namespace quantserve::quant

#include "quant/quantizer_registry.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "quant/methods/none/none_quantizer.h"
// Each compiled-in method (QS_QUANT_METHODS in quant/CMakeLists.txt) declares
// `absl::Status Register<Name>Quantizer(QuantizerRegistry&)` in methods/<m>/<m>_quantizer.h.
#ifdef QS_QUANT_METHOD_BITSANDBYTES
#include "quant/methods/bitsandbytes/bitsandbytes_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_HQQ
#include "quant/methods/hqq/hqq_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_QUANTO
#include "quant/methods/quanto/quanto_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_EETQ
#include "quant/methods/eetq/eetq_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_FBGEMM_FP8
#include "quant/methods/fbgemm_fp8/fbgemm_fp8_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_TORCHAO
#include "quant/methods/torchao/torchao_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_GPTQ
#include "quant/methods/gptq/gptq_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_AWQ
#include "quant/methods/awq/awq_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_AQLM
#include "quant/methods/aqlm/aqlm_quantizer.h"
#endif
#ifdef QS_QUANT_METHOD_COMPRESSED_TENSORS
#include "quant/methods/compressed_tensors/compressed_tensors_quantizer.h"
#include "common/json_nesting.h"
#endif

namespace quantserve::quant {
namespace {

using json = nlohmann::json;

absl::StatusOr<std::string> MethodOf(const std::string& text, const char* where) {
  QS_RETURN_IF_ERROR(common::CheckJsonNesting(absl::StrCat(where, ": quantization_config"), text));
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

absl::Status QuantizerRegistry::Register(const std::string& quant_method, Factory factory,
                                        std::vector<std::string> loading_attributes) {
  if (!factories_.emplace(quant_method, Row{std::move(factory), std::move(loading_attributes)})
           .second) {
    return absl::AlreadyExistsError(absl::StrCat("quant_method '", quant_method,
                                                 "' is registered twice"));
  }
  return absl::OkStatus();
}

std::vector<std::string> QuantizerRegistry::methods() const {
  std::vector<std::string> out;
  for (const auto& [name, row] : factories_) out.push_back(name);
  return out;
}

absl::StatusOr<std::unique_ptr<Quantizer>> QuantizerRegistry::Create(
    const std::string& request_json, const std::string& checkpoint_json) const {
  std::string method = "none";
  std::string config = "{\"quant_method\":\"none\"}";
  if (!checkpoint_json.empty()) {
    QS_ASSIGN_OR_RETURN(method, MethodOf(checkpoint_json, "config.json"));
    config = checkpoint_json;
  }
  std::string request_method;
  if (!request_json.empty()) {
    QS_ASSIGN_OR_RETURN(request_method, MethodOf(request_json, "request"));
    if (!checkpoint_json.empty() && request_method != method) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quantization_config.quant_method '", request_method, "' conflicts with the checkpoint's '",
          method, "' (a pre-quantized checkpoint can only be loaded with its own method; "
          "leave quantization_config empty to use the checkpoint's)"));
    }
    if (checkpoint_json.empty()) {
      method = request_method;
      config = request_json;
    }
  }
  auto it = factories_.find(method);
  if (it == factories_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization_config.quant_method '", method,
                     "' is not supported (supported: ", absl::StrJoin(methods(), ", "), ")"));
  }
  if (!request_json.empty() && !checkpoint_json.empty()) {
    // transformers validates the request's config, then keeps the checkpoint's with the
    // request's loading attributes written over it.
    QS_ASSIGN_OR_RETURN(auto requested, it->second.factory(request_json));
    json merged = json::parse(checkpoint_json);
    const json normalized = json::parse(requested->NormalizedConfigJson());
    std::vector<std::string> overridden;
    for (const std::string& key : it->second.loading_attributes) {
      auto v = normalized.find(key);
      if (v == normalized.end()) continue;
      merged[key] = *v;
      overridden.push_back(key);
    }
    QS_LOG(INFO) << "request quantization_config merged into the checkpoint's"
                 << common::Kv("quant_method", method)
                 << common::Kv("loading_attributes", absl::StrJoin(overridden, ","));
    config = merged.dump();
  }
  return it->second.factory(config);
}

absl::Status RegisterBuiltinQuantizers(QuantizerRegistry& registry) {
  QS_RETURN_IF_ERROR(registry.Register("none", &NoneQuantizer::Create));
#ifdef QS_QUANT_METHOD_BITSANDBYTES
  QS_RETURN_IF_ERROR(RegisterBitsAndBytesQuantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_HQQ
  QS_RETURN_IF_ERROR(RegisterHqqQuantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_QUANTO
  QS_RETURN_IF_ERROR(RegisterQuantoQuantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_EETQ
  QS_RETURN_IF_ERROR(RegisterEetqQuantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_FBGEMM_FP8
  QS_RETURN_IF_ERROR(RegisterFbgemmFp8Quantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_TORCHAO
  QS_RETURN_IF_ERROR(RegisterTorchAoQuantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_GPTQ
  QS_RETURN_IF_ERROR(RegisterGptqQuantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_AWQ
  QS_RETURN_IF_ERROR(RegisterAwqQuantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_AQLM
  QS_RETURN_IF_ERROR(RegisterAqlmQuantizer(registry));
#endif
#ifdef QS_QUANT_METHOD_COMPRESSED_TENSORS
  QS_RETURN_IF_ERROR(RegisterCompressedTensorsQuantizer(registry));
#endif
  return absl::OkStatus();
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

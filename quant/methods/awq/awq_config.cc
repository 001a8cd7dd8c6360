#include "quant/methods/awq/awq_config.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {
namespace {

using Json = nlohmann::json;

const Json* Raw(const ConfigReader& r, const std::string& key) {
  auto it = r.object().find(key);
  return it == r.object().end() ? nullptr : &*it;
}

bool Contains(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

}  // namespace

const std::vector<std::string>& AwqConfig::AllowedFormats() {
  // AwqFormat (quantization_config.py:72).
  static const std::vector<std::string> kFormats = {"gemm", "gemv", "gemv_fast", "llm-awq"};
  return kFormats;
}

const std::vector<std::string>& AwqConfig::AllowedBackends() {
  // AwqBackend (quantization_config.py:79); "autoawq" is accepted as written.
  static const std::vector<std::string> kBackends = {
      "autoawq",    "auto",       "auto_trainable", "machete",     "marlin",
      "exllama_v2", "exllama_v1", "gemm",           "gemm_triton", "gemv",
      "gemv_fast",  "torch_awq",  "torch_fused_awq"};
  return kBackends;
}

absl::StatusOr<AwqConfig> AwqConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::Parse(json));
  AwqConfig c;
  GptqInitArgs args;
  const Json* bits = Raw(r, "bits");
  args.bits = bits != nullptr ? *bits : Json(4);

  // format = kwargs.pop("format", "gemm"); a non-null "version" replaces it, lower-cased; a
  // non-null "checkpoint_format" then replaces both inside GPTQConfig.__init__.
  std::string format_key = "format";
  const Json* format = Raw(r, "format");
  args.format = format != nullptr ? *format : Json("gemm");
  if (r.Has("version")) {
    std::string version;
    QS_RETURN_IF_ERROR(r.String("version", &version));
    args.format = absl::AsciiStrToLower(version);
    format_key = "version";
  }
  if (r.Has("checkpoint_format")) format_key = "checkpoint_format";

  // backend: AwqBackend, default "auto"; "autoawq" exactly (before GPTQConfig lower-cases it)
  // means "auto". None and non-strings fail post_init's membership test.
  const std::string backends = "one of " + QuotedList(AllowedBackends());
  const Json* backend = Raw(r, "backend");
  Json backend_value = backend != nullptr ? *backend : Json("auto");
  if (!backend_value.is_string()) return r.Invalid("backend", backends);
  if (backend_value.get<std::string>() == "autoawq") backend_value = "auto";
  args.backend = backend_value;

  QS_RETURN_IF_ERROR(r.Bool("zero_point", &c.zero_point));
  if (const Json* z = Raw(r, "zero_point"); z != nullptr && z->is_null()) {
    return r.Invalid("zero_point", "true or false");
  }
  QS_RETURN_IF_ERROR(r.StringList("modules_to_not_convert", &c.modules_to_not_convert));
  QS_RETURN_IF_ERROR(ParseGptqInit(r, args, &c.gptq));

  // AwqConfig.post_init (quantization_config.py:841).
  GptqConfig& g = c.gptq;
  if (g.backend == "llm-awq") {
    g.format = "llm-awq";
    g.backend = "auto";
  }
  if (!Contains(AllowedFormats(), g.format)) {
    return r.Invalid(format_key, "one of " + QuotedList(AllowedFormats()));
  }
  if (!Contains(AllowedBackends(), g.backend)) return r.Invalid("backend", backends);
  return c;
}

std::string AwqConfig::ToJson() const {
  // __dict__ order: AwqConfig sets zero_point and modules_to_not_convert before calling
  // GPTQConfig.__init__; to_dict drops checkpoint_format and appends version.
  nlohmann::ordered_json j;
  j["zero_point"] = zero_point;
  j["modules_to_not_convert"] = modules_to_not_convert.has_value()
                                    ? nlohmann::ordered_json(*modules_to_not_convert)
                                    : nlohmann::ordered_json(nullptr);
  const nlohmann::ordered_json inherited = gptq.ToOrderedJson("awq");
  for (const auto& [key, value] : inherited.items()) j[key] = value;
  j["version"] = gptq.format;
  return j.dump();
}

}  // namespace quantserve::quant

#include "quant/config_reader.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/json_nesting.h"

namespace quantserve::quant {

using Json = nlohmann::json;

std::string QuotedList(const std::vector<std::string>& values) {
  std::string out;
  for (const auto& v : values) absl::StrAppend(&out, out.empty() ? "" : ", ", "\"", v, "\"");
  return out;
}

absl::StatusOr<ConfigReader> ConfigReader::Parse(const std::string& text) {
  if (absl::Status s = common::CheckJsonNesting("quantization_config", text); !s.ok()) return s;
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("quantization_config is not a JSON object");
  }
  return ConfigReader(std::move(j));
}

const Json* ConfigReader::Find(const std::string& key) const {
  auto it = json_.find(key);
  if (it == json_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool ConfigReader::Has(const std::string& key) const { return Find(key) != nullptr; }

absl::Status ConfigReader::Invalid(const std::string& key, const std::string& what) const {
  auto it = json_.find(key);
  const std::string got = it == json_.end() ? "nothing" : it->dump();
  return absl::InvalidArgumentError(
      absl::StrCat("quantization_config.", key, " must be ", what, " (got ", got, ")"));
}

absl::Status ConfigReader::Bool(const std::string& key, bool* out) const {
  const Json* v = Find(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return Invalid(key, "true or false");
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status ConfigReader::Int(const std::string& key, int64_t* out) const {
  const Json* v = Find(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number_integer()) return Invalid(key, "an integer");
  *out = v->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ConfigReader::Number(const std::string& key, double* out, bool require_float) const {
  const Json* v = Find(key);
  if (v == nullptr) return absl::OkStatus();
  if (require_float ? !v->is_number_float() : !v->is_number()) {
    return Invalid(key, require_float ? "a float (e.g. 6.0)" : "a number");
  }
  *out = v->get<double>();
  if (!std::isfinite(*out)) return Invalid(key, "finite");
  return absl::OkStatus();
}

absl::Status ConfigReader::String(const std::string& key, std::string* out) const {
  const Json* v = Find(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_string()) return Invalid(key, "a string");
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status ConfigReader::Enum(const std::string& key, std::string* out,
                                const std::vector<std::string>& allowed, bool lower) const {
  const Json* v = Find(key);
  if (v == nullptr) return absl::OkStatus();
  const std::string what = absl::StrCat("one of ", QuotedList(allowed));
  if (!v->is_string()) return Invalid(key, what);
  std::string s = v->get<std::string>();
  if (lower) s = absl::AsciiStrToLower(s);
  for (const auto& a : allowed) {
    if (s == a) {
      *out = s;
      return absl::OkStatus();
    }
  }
  return Invalid(key, what);
}

absl::Status ConfigReader::StringList(const std::string& key,
                                      std::optional<std::vector<std::string>>* out) const {
  const Json* v = Find(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_array()) return Invalid(key, "a list of module names");
  std::vector<std::string> list;
  for (const auto& e : *v) {
    if (!e.is_string()) return Invalid(key, "a list of strings");
    list.push_back(e.get<std::string>());
  }
  *out = std::move(list);
  return absl::OkStatus();
}

}  // namespace quantserve::quant

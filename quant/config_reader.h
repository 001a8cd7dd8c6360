#pragma once
// ConfigReader: typed reads of one HF quantization_config JSON object, with transformers'
// post_init strictness and one error style.
//
// Every getter leaves `*out` (the caller's default) untouched when the key is absent or null,
// and returns INVALID_ARGUMENT naming the field, what it must be, and what it got:
//   quantization_config.bnb_4bit_quant_type must be one of "fp4", "nf4" (got "nf5")
// Keys no getter asked for are kept by the caller's normalized output only if it copies them;
// like transformers, unknown keys are ignored.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quantserve::quant {

class ConfigReader {
 public:
  // INVALID_ARGUMENT when `text` is not a JSON object.
  static absl::StatusOr<ConfigReader> Parse(const std::string& text);
  explicit ConfigReader(nlohmann::json object) : json_(std::move(object)) {}

  bool Has(const std::string& key) const;
  // JSON true/false only (transformers raises TypeError on 0/1 and "true").
  absl::Status Bool(const std::string& key, bool* out) const;
  // An integer; a float with an integral value is refused like Python's isinstance(x, int).
  absl::Status Int(const std::string& key, int64_t* out) const;
  // A number. `require_float`: a JSON integer is refused (BitsAndBytesConfig's
  // isinstance(llm_int8_threshold, float)).
  absl::Status Number(const std::string& key, double* out, bool require_float = false) const;
  absl::Status String(const std::string& key, std::string* out) const;
  // A string from `allowed`; `lower` compares case-insensitively and stores lower case.
  absl::Status Enum(const std::string& key, std::string* out,
                    const std::vector<std::string>& allowed, bool lower = false) const;
  // A list of strings; null leaves `*out` unset.
  absl::Status StringList(const std::string& key,
                          std::optional<std::vector<std::string>>* out) const;

  const nlohmann::json& object() const { return json_; }

  // "quantization_config.<key> must be <what> (got <json>)".
  absl::Status Invalid(const std::string& key, const std::string& what) const;

 private:
  const nlohmann::json* Find(const std::string& key) const;
  nlohmann::json json_;
};

// `"a", "b"` for error messages.
std::string QuotedList(const std::vector<std::string>& values);

}  // namespace quantserve::quant

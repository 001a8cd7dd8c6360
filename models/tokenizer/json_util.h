#pragma once
// Typed, non-throwing accessors for tokenizer.json objects. Every error is INVALID_ARGUMENT and
// names the field by its path (e.g. "pre_tokenizer.pretokenizers[1].behavior").

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace quantserve::models::internal {

using Json = nlohmann::json;

// Path of `key` inside the object at `path` ("a.b" or just "b" at the top).
std::string FieldPath(absl::string_view path, absl::string_view key);

// Refuses Sequence components nested absurdly deep (their factories recurse), judged by the
// length of their path.
absl::Status CheckNesting(absl::string_view path);

// The "type" string of the component object at `path`.
absl::StatusOr<std::string> GetType(const Json& object, absl::string_view path);

// Missing or null fields yield the default.
absl::StatusOr<bool> GetBool(const Json& object, absl::string_view key, bool default_value,
                             absl::string_view path);
absl::StatusOr<int64_t> GetInt(const Json& object, absl::string_view key, int64_t default_value,
                               absl::string_view path);
absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& object,
                                                             absl::string_view key,
                                                             absl::string_view path);
absl::StatusOr<std::string> GetString(const Json& object, absl::string_view key,
                                      absl::string_view default_value, absl::string_view path);
// A required field of the given JSON kind; returns a pointer into `object`.
absl::StatusOr<const Json*> GetArray(const Json& object, absl::string_view key,
                                     absl::string_view path);
absl::StatusOr<const Json*> GetObject(const Json& object, absl::string_view key,
                                      absl::string_view path);

// Parses a {"type": "Sequence", "<key>": [...]} component: each element through `create`
// (the component's own factory, so sequences may nest), with its path for errors.
template <typename T, typename Create>
absl::StatusOr<std::vector<std::unique_ptr<T>>> ParseSequence(const Json& config,
                                                              absl::string_view key,
                                                              absl::string_view path,
                                                              Create create) {
  QS_RETURN_IF_ERROR(CheckNesting(path));
  QS_ASSIGN_OR_RETURN(const Json* items, GetArray(config, key, path));
  std::vector<std::unique_ptr<T>> steps;
  for (size_t i = 0; i < items->size(); ++i) {
    QS_ASSIGN_OR_RETURN(auto step,
                        create((*items)[i], absl::StrCat(FieldPath(path, key), "[", i, "]")));
    steps.push_back(std::move(step));
  }
  return steps;
}

// Oniguruma/Rust-style {"String": "..."} or {"Regex": "..."} pattern objects.
struct Pattern {
  std::string text;
  bool is_regex = false;
};
absl::StatusOr<Pattern> GetPattern(const Json& object, absl::string_view key,
                                   absl::string_view path);

}  // namespace quantserve::models::internal

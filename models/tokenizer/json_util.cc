#include "models/tokenizer/json_util.h"

#include "absl/strings/str_cat.h"

namespace quantserve::models::internal {
namespace {

const char* KindName(const Json& value) { return value.type_name(); }

absl::Status WrongKind(absl::string_view path, absl::string_view key, absl::string_view want,
                       const Json& got) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", FieldPath(path, key),
                                                 " must be ", want, ", got ", KindName(got)));
}

// Null when the field is absent or not an object to look into.
const Json* Find(const Json& object, absl::string_view key) {
  if (!object.is_object()) {
    return nullptr;
  }
  auto it = object.find(std::string(key));
  return it == object.end() ? nullptr : &*it;
}

}  // namespace

std::string FieldPath(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

absl::Status CheckNesting(absl::string_view path) {
  constexpr size_t kMaxPathBytes = 1024;  // a few dozen levels; real files use two
  if (path.size() > kMaxPathBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.json: components nested too deeply at ", path.substr(0, 80), "..."));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetType(const Json& object, absl::string_view path) {
  if (!object.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: ", path, " must be an object, got ", KindName(object)));
  }
  const Json* type = Find(object, "type");
  if (type == nullptr || !type->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: ", FieldPath(path, "type"), " is missing or not a string"));
  }
  return type->get<std::string>();
}

absl::StatusOr<bool> GetBool(const Json& object, absl::string_view key, bool default_value,
                             absl::string_view path) {
  const Json* value = Find(object, key);
  if (value == nullptr || value->is_null()) {
    return default_value;
  }
  if (!value->is_boolean()) {
    return WrongKind(path, key, "a boolean", *value);
  }
  return value->get<bool>();
}

absl::StatusOr<int64_t> GetInt(const Json& object, absl::string_view key, int64_t default_value,
                               absl::string_view path) {
  const Json* value = Find(object, key);
  if (value == nullptr || value->is_null()) {
    return default_value;
  }
  if (!value->is_number_integer()) {
    return WrongKind(path, key, "an integer", *value);
  }
  return value->get<int64_t>();
}

absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& object,
                                                             absl::string_view key,
                                                             absl::string_view path) {
  const Json* value = Find(object, key);
  if (value == nullptr || value->is_null()) {
    return std::optional<std::string>();
  }
  if (!value->is_string()) {
    return WrongKind(path, key, "a string", *value);
  }
  return std::optional<std::string>(value->get<std::string>());
}

absl::StatusOr<std::string> GetString(const Json& object, absl::string_view key,
                                      absl::string_view default_value, absl::string_view path) {
  auto value = GetOptionalString(object, key, path);
  if (!value.ok()) {
    return value.status();
  }
  return value->has_value() ? **value : std::string(default_value);
}

absl::StatusOr<const Json*> GetArray(const Json& object, absl::string_view key,
                                     absl::string_view path) {
  const Json* value = Find(object, key);
  if (value == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: missing field ", FieldPath(path, key)));
  }
  if (!value->is_array()) {
    return WrongKind(path, key, "an array", *value);
  }
  return value;
}

absl::StatusOr<const Json*> GetObject(const Json& object, absl::string_view key,
                                      absl::string_view path) {
  const Json* value = Find(object, key);
  if (value == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: missing field ", FieldPath(path, key)));
  }
  if (!value->is_object()) {
    return WrongKind(path, key, "an object", *value);
  }
  return value;
}

absl::StatusOr<Pattern> GetPattern(const Json& object, absl::string_view key,
                                   absl::string_view path) {
  const Json* value = Find(object, key);
  if (value != nullptr && value->is_string()) {  // a bare string is a literal
    return Pattern{value->get<std::string>(), false};
  }
  if (value == nullptr || !value->is_object() || value->size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", FieldPath(path, key),
                                                   " must be {\"String\": ...} or "
                                                   "{\"Regex\": ...}"));
  }
  auto it = value->begin();
  const std::string kind = it.key();
  const Json& text = it.value();
  if ((kind != "String" && kind != "Regex") || !text.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", FieldPath(path, key),
                                                   ": unsupported pattern kind '", kind, "'"));
  }
  return Pattern{text.get<std::string>(), kind == "Regex"};
}

}  // namespace quantserve::models::internal

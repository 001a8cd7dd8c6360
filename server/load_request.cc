#include "server/load_request.h"

#include <filesystem>
#include <set>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "common/json_nesting.h"

namespace quantserve::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

// Checks that `text` is a JSON object; "" is allowed (means "not given").
absl::Status CheckJsonObject(absl::string_view field, absl::string_view text) {
  if (text.empty()) {
    return absl::OkStatus();
  }
  if (absl::Status s = common::CheckJsonNesting(field, text); !s.ok()) {
    return s;
  }
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return FieldError(field, "not valid JSON");
  }
  if (!parsed.is_object()) {
    return FieldError(field, "must be a JSON object");
  }
  return absl::OkStatus();
}

bool IsWithin(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty()) {
      continue;  // trailing separator of the root
    }
    if (p == path.end() || *p != *r) {
      return false;
    }
  }
  return true;
}

// A startup-config value that may be given as a JSON object or as text holding one.
absl::StatusOr<std::string> JsonOrText(const json& value, absl::string_view field) {
  if (value.is_string()) {
    return value.get<std::string>();
  }
  if (value.is_object()) {
    return value.dump();
  }
  return FieldError(field, "must be a JSON object or a string");
}

}  // namespace

absl::Status ValidateModelName(absl::string_view name, absl::string_view field) {
  if (name.empty()) {
    return FieldError(field, "required (a model name)");
  }
  if (name.size() > kMaxModelNameLength) {
    return FieldError(field, absl::StrCat("longer than ", kMaxModelNameLength, " characters"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return FieldError(field, absl::StrCat("'", name, "' may only contain [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLoadRequest(const LoadRequest& request) {
  if (absl::Status s = ValidateModelName(request.name); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckRequestPath(request.path); !s.ok()) return s;
  if (absl::Status s = CheckJsonObject("quantization_config", request.quantization_config_json);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckJsonObject("max_memory", request.max_memory_json); !s.ok()) {
    return s;
  }
  static const std::set<std::string, std::less<>> kDtypes = {"", "auto", "float32", "bfloat16",
                                                             "float16"};
  if (!kDtypes.contains(request.dtype)) {
    return FieldError(
        "dtype", absl::StrCat("'", request.dtype, "' is not one of auto|float32|bfloat16|float16"));
  }
  absl::string_view device_map = request.device_map;
  if (absl::StartsWith(device_map, "{")) {
    if (absl::Status s = CheckJsonObject("device_map", device_map); !s.ok()) {
      return s;
    }
  } else if (!device_map.empty() && device_map != "auto" && device_map != "cpu" &&
             device_map != "cuda") {
    int index = 0;
    if (!absl::ConsumePrefix(&device_map, "cuda:") || !absl::SimpleAtoi(device_map, &index) ||
        index < 0) {
      return FieldError("device_map", absl::StrCat("'", request.device_map,
                                                   "' is not auto|cpu|cuda|cuda:N or a JSON "
                                                   "object"));
    }
  }
  if (request.num_threads < 0) {
    return FieldError("num_threads", absl::StrCat("must be >= 0, got ", request.num_threads));
  }
  if (!request.kernel_activations.empty() && request.kernel_activations != "int16" &&
      request.kernel_activations != "int8") {
    return FieldError("kernel_activations", absl::StrCat("'", request.kernel_activations,
                                                         "' is not int16|int8"));
  }
  return absl::OkStatus();
}

std::string RequestedQuantMethod(absl::string_view quantization_config_json) {
  if (quantization_config_json.empty() ||
      common::JsonNesting(quantization_config_json) > common::kMaxJsonNesting) {
    return "";
  }
  json parsed = json::parse(quantization_config_json, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    return "";
  }
  auto it = parsed.find("quant_method");
  if (it == parsed.end() || !it->is_string()) {
    return "";
  }
  return it->get<std::string>();
}

absl::Status CheckRequestPath(absl::string_view path) {
  if (path.empty()) {
    return FieldError("path", "required (a directory under --model_root)");
  }
  for (const char c : path) {
    // The OS would read a NUL as the end of the path: "a\0b" would load "a".
    if (c == '\0') return FieldError("path", "contains a NUL byte");
    if (static_cast<unsigned char>(c) < 0x20) {
      return FieldError("path", "contains a control character");
    }
  }
  const fs::path requested{std::string(path)};
  if (requested.is_absolute()) {
    return FieldError("path", absl::StrCat("'", path,
                                           "' is absolute; paths are relative to --model_root"));
  }
  for (const fs::path& component : requested) {
    if (component == "..") {
      return FieldError("path", absl::StrCat("'", path,
                                             "' contains '..'; paths are resolved inside "
                                             "--model_root"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveModelPath(absl::string_view model_root, absl::string_view path,
                                             bool allow_symlinks_outside_root) {
  if (absl::Status s = CheckRequestPath(path); !s.ok()) return s;
  const fs::path root{std::string(model_root)};
  const fs::path candidate = (root / fs::path(std::string(path))).lexically_normal();
  if (!IsWithin(candidate, root)) {
    return FieldError("path", absl::StrCat("'", path, "' is outside --model_root"));
  }
  std::error_code ec;
  if (!fs::exists(candidate, ec)) {
    return absl::NotFoundError(
        absl::StrCat("path: model directory '", path, "' does not exist under --model_root"));
  }
  fs::path canonical = fs::canonical(candidate, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("path: cannot resolve '", path, "': ", ec.message()));
  }
  if (!allow_symlinks_outside_root && !IsWithin(canonical, root)) {
    return FieldError("path", absl::StrCat("'", path,
                                           "' leads outside --model_root through a symlink "
                                           "(--allow_symlinks_outside_root permits it)"));
  }
  if (!fs::is_directory(canonical, ec)) {
    return FieldError("path", absl::StrCat("'", path, "' is not a directory"));
  }
  return canonical.string();
}

absl::StatusOr<std::string> ResolveNewModelPath(absl::string_view model_root,
                                                absl::string_view path) {
  if (absl::Status s = CheckRequestPath(path); !s.ok()) return s;
  const fs::path root{std::string(model_root)};
  const fs::path candidate = (root / fs::path(std::string(path))).lexically_normal();
  if (!IsWithin(candidate, root) || candidate == root) {
    return FieldError("path", absl::StrCat("'", path, "' is not a new directory inside --model_root"));
  }
  std::error_code ec;
  if (fs::exists(candidate, ec) && !(fs::is_directory(candidate, ec) && fs::is_empty(candidate, ec))) {
    return absl::AlreadyExistsError(
        absl::StrCat("path: '", path, "' already exists under --model_root; choose a new one"));
  }
  // Symlinked ancestors may not lead out of the root.
  fs::path ancestor = candidate;
  while (!fs::exists(ancestor, ec) && ancestor.has_parent_path() && ancestor != ancestor.parent_path()) {
    ancestor = ancestor.parent_path();
  }
  const fs::path canonical = fs::canonical(ancestor, ec);
  if (ec || !IsWithin(canonical, root)) {
    return FieldError("path", absl::StrCat("'", path, "' leads outside --model_root"));
  }
  return candidate.string();
}

absl::StatusOr<std::vector<LoadRequest>> ParseStartupConfig(absl::string_view json_text) {
  if (absl::Status s = common::CheckJsonNesting("startup config", json_text); !s.ok()) {
    return s;
  }
  json config = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) {
    return absl::InvalidArgumentError("startup config: not valid JSON");
  }
  if (!config.is_object()) {
    return absl::InvalidArgumentError("startup config: must be a JSON object {\"models\": [...]}");
  }
  std::vector<LoadRequest> requests;
  auto models = config.find("models");
  if (models == config.end()) {
    return requests;
  }
  if (!models->is_array()) {
    return absl::InvalidArgumentError("startup config: \"models\" must be an array");
  }
  std::set<std::string, std::less<>> names;
  for (size_t i = 0; i < models->size(); ++i) {
    const json& entry = (*models)[i];
    const std::string where = absl::StrCat("startup config models[", i, "]");
    if (!entry.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": must be an object"));
    }
    LoadRequest request;
    for (const auto& [key, value] : entry.items()) {
      const std::string field = absl::StrCat(where, ".", key);
      if (key == "name" || key == "path" || key == "dtype" || key == "kernel_activations") {
        if (!value.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(field, ": must be a string"));
        }
        std::string& target = key == "name"    ? request.name
                              : key == "path"  ? request.path
                              : key == "dtype" ? request.dtype
                                               : request.kernel_activations;
        target = value.get<std::string>();
      } else if (key == "quantization_config" || key == "device_map" || key == "max_memory") {
        absl::StatusOr<std::string> text = JsonOrText(value, field);
        if (!text.ok()) {
          return text.status();
        }
        std::string& target =
            key == "quantization_config"
                ? request.quantization_config_json
                : (key == "device_map" ? request.device_map : request.max_memory_json);
        target = *std::move(text);
      } else if (key == "num_threads") {
        if (!value.is_number_integer()) {
          return absl::InvalidArgumentError(absl::StrCat(field, ": must be an integer"));
        }
        request.num_threads = value.get<int>();
      } else if (key == "calibration_texts") {
        if (!value.is_array()) {
          return absl::InvalidArgumentError(absl::StrCat(field, ": must be an array of strings"));
        }
        for (const json& text : value) {
          if (!text.is_string()) {
            return absl::InvalidArgumentError(
                absl::StrCat(field, ": must be an array of strings"));
          }
          request.calibration_texts.push_back(text.get<std::string>());
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            field,
            ": unknown key (expected name, path, quantization_config, dtype, device_map, "
            "max_memory, num_threads, calibration_texts, kernel_activations)"));
      }
    }
    if (absl::Status s = ValidateLoadRequest(request); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".", s.message()));
    }
    if (!names.insert(request.name).second) {
      return absl::AlreadyExistsError(
          absl::StrCat(where, ".name: '", request.name, "' appears twice"));
    }
    requests.push_back(std::move(request));
  }
  return requests;
}

}  // namespace quantserve::server

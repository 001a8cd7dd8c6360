#include "quant/methods/compressed_tensors/compressed_tensors_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {
namespace {

using Json = nlohmann::ordered_json;
using Args = CompressedTensorsConfig::QuantizationArgs;
using Scheme = CompressedTensorsConfig::QuantizationScheme;

// Enum values of compressed-tensors 0.20 (quant_args.py, quant_config.py, config/base.py).
const std::vector<std::string> kTypes = {"int", "float"};
const std::vector<std::string> kStrategies = {"tensor", "channel",      "group",    "block",
                                              "token",  "tensor_group", "attn_head"};
const std::vector<std::string> kDynamicStrategies = {"token", "tensor", "tensor_group", "group"};
const std::vector<std::string> kActivationStrategies = {"token", "tensor", "group", "tensor_group",
                                                        "attn_head"};
const std::vector<std::string> kStatuses = {"initialized", "calibration", "frozen", "compressed",
                                            "decompressed"};
const std::vector<std::string> kCompressionFormats = {
    "dense",           "sparse-bitmask",       "sparse-24-bitmask",    "int-quantized",
    "float-quantized", "naive-quantized",      "pack-quantized",       "marlin-24",
    "mixed-precision", "nvfp4-pack-quantized", "mxfp4-pack-quantized", "mxfp6-pack-quantized",
    "mxfp8-quantized"};
const std::vector<std::string> kArgsFields = {
    "num_bits", "type",     "symmetric",   "group_size", "strategy", "block_structure",
    "dynamic",  "actorder", "scale_dtype", "zp_dtype",   "observer", "observer_kwargs"};
const std::vector<std::string> kSchemeFields = {"targets", "weights", "input_activations",
                                                "output_activations", "format"};

// torch.<name> -> str(dtype) for every torch.dtype attribute of the pinned torch (TorchDtype
// accepts "name" or "torch.name" and serializes str(dtype)).
const std::pair<const char*, const char*> kTorchDtypes[] = {
    {"bfloat16", "bfloat16"},
    {"bit", "uint1"},
    {"bits16", "bits16"},
    {"bits1x8", "bits1x8"},
    {"bits2x4", "bits2x4"},
    {"bits4x2", "bits4x2"},
    {"bits8", "bits8"},
    {"bool", "bool"},
    {"cdouble", "complex128"},
    {"cfloat", "complex64"},
    {"chalf", "complex32"},
    {"complex128", "complex128"},
    {"complex32", "complex32"},
    {"complex64", "complex64"},
    {"double", "float64"},
    {"float", "float32"},
    {"float16", "float16"},
    {"float32", "float32"},
    {"float4_e2m1fn_x2", "float4_e2m1fn_x2"},
    {"float64", "float64"},
    {"float8_e4m3fn", "float8_e4m3fn"},
    {"float8_e4m3fnuz", "float8_e4m3fnuz"},
    {"float8_e5m2", "float8_e5m2"},
    {"float8_e5m2fnuz", "float8_e5m2fnuz"},
    {"float8_e8m0fnu", "float8_e8m0fnu"},
    {"half", "float16"},
    {"int", "int32"},
    {"int1", "int1"},
    {"int16", "int16"},
    {"int2", "int2"},
    {"int3", "int3"},
    {"int32", "int32"},
    {"int4", "int4"},
    {"int5", "int5"},
    {"int6", "int6"},
    {"int64", "int64"},
    {"int7", "int7"},
    {"int8", "int8"},
    {"long", "int64"},
    {"qint32", "qint32"},
    {"qint8", "qint8"},
    {"quint2x4", "quint2x4"},
    {"quint4x2", "quint4x2"},
    {"quint8", "quint8"},
    {"short", "int16"},
    {"uint1", "uint1"},
    {"uint16", "uint16"},
    {"uint2", "uint2"},
    {"uint3", "uint3"},
    {"uint32", "uint32"},
    {"uint4", "uint4"},
    {"uint5", "uint5"},
    {"uint6", "uint6"},
    {"uint64", "uint64"},
    {"uint7", "uint7"},
    {"uint8", "uint8"},
};

// PRESET_SCHEMES (quant_scheme.py:466): the QuantizationArgs each preset constructs, as the
// explicitly given fields (what pydantic's model_fields_set holds), in JSON.
struct Preset {
  const char* name;
  const char* weights;            // nullptr: none
  const char* input_activations;  // nullptr: none
};
// clang-format off
const Preset kPresets[] = {
    {"UNQUANTIZED", nullptr, nullptr},
    {"W4A16_ASYM", R"({"num_bits":4,"type":"int","symmetric":false,"group_size":128,"strategy":"group","dynamic":false})", nullptr},
    {"W8A8", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"channel","dynamic":false})", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"INT8", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"channel","dynamic":false})", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W4AFP8", R"({"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":8,"type":"float","symmetric":true,"strategy":"token","dynamic":true,"observer":null})"},
    {"FP8", R"({"num_bits":8,"type":"float","symmetric":true,"strategy":"tensor","dynamic":false})", R"({"num_bits":8,"type":"float","symmetric":true,"strategy":"tensor","dynamic":false,"observer":"static_minmax"})"},
    {"FP8_DYNAMIC", R"({"num_bits":8,"type":"float","symmetric":true,"strategy":"channel","dynamic":false})", R"({"num_bits":8,"type":"float","symmetric":true,"strategy":"token","dynamic":true})"},
    {"FP8_BLOCK", R"({"num_bits":8,"type":"float","symmetric":true,"strategy":"block","block_structure":[128,128],"dynamic":false})", R"({"num_bits":8,"type":"float","symmetric":true,"group_size":128,"strategy":"group","dynamic":true})"},
    {"NVFP4A16", R"({"num_bits":4,"type":"float","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":false,"scale_dtype":"float8_e4m3fn","zp_dtype":"float8_e4m3fn"})", nullptr},
    {"NVFP4", R"({"num_bits":4,"type":"float","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":false,"scale_dtype":"float8_e4m3fn","zp_dtype":"float8_e4m3fn"})", R"({"num_bits":4,"type":"float","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":"local","scale_dtype":"float8_e4m3fn","zp_dtype":"float8_e4m3fn","observer":"static_minmax"})"},
    {"MXFP4A16", R"({"num_bits":4,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"uint8","zp_dtype":"uint8"})", nullptr},
    {"MXFP4", R"({"num_bits":4,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"uint8","zp_dtype":"uint8"})", R"({"num_bits":4,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":true,"scale_dtype":"uint8","zp_dtype":"uint8"})"},
    {"MXFP4XFP8", R"({"num_bits":4,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"uint8","zp_dtype":"uint8"})", R"({"num_bits":8,"type":"float","symmetric":true,"group_size":128,"strategy":"group","dynamic":true})"},
    {"MXFP6A16", R"({"num_bits":6,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"uint8","zp_dtype":"uint8"})", nullptr},
    {"MXFP6A8", R"({"num_bits":6,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"uint8","zp_dtype":"uint8"})", R"({"num_bits":8,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":true,"scale_dtype":"uint8","zp_dtype":"uint8"})"},
    {"MXFP8A16", R"({"num_bits":8,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"uint8","zp_dtype":"uint8"})", nullptr},
    {"MXFP8", R"({"num_bits":8,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"uint8","zp_dtype":"uint8"})", R"({"num_bits":8,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":true,"scale_dtype":"uint8","zp_dtype":"uint8"})"},
    {"W2A4", R"({"num_bits":2,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":4,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W2A8", R"({"num_bits":2,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W2A16", R"({"num_bits":2,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", nullptr},
    {"W3A4", R"({"num_bits":3,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":4,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W3A8", R"({"num_bits":3,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W3A16", R"({"num_bits":3,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", nullptr},
    {"W4A4", R"({"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":4,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W4A8", R"({"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W4A16", R"({"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", nullptr},
    {"W5A8", R"({"num_bits":5,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W5A16", R"({"num_bits":5,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", nullptr},
    {"W6A8", R"({"num_bits":6,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W6A16", R"({"num_bits":6,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", nullptr},
    {"W7A8", R"({"num_bits":7,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", R"({"num_bits":8,"type":"int","symmetric":true,"strategy":"token","dynamic":true})"},
    {"W7A16", R"({"num_bits":7,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", nullptr},
    {"W8A16", R"({"num_bits":8,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})", nullptr},
};
// clang-format on

bool Contains(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

// "<path> must be <what> (got <json>)", the ConfigReader style with a dotted path.
absl::Status Invalid(const std::string& path, const std::string& what, const Json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, " must be ", what, " (got ", got.dump(), ")"));
}

absl::Status Missing(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, " is required (", what, ")"));
}

absl::Status UnknownField(const std::string& path, const std::string& key, const char* model,
                          const std::vector<std::string>& allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, " has unknown field \"", key, "\" (", model,
                   " forbids extra fields; allowed: ", QuotedList(allowed), ")"));
}

// Python truthiness of a JSON value.
bool Truthy(const Json* v) {
  if (v == nullptr || v->is_null()) return false;
  if (v->is_boolean()) return v->get<bool>();
  if (v->is_number()) return v->get<double>() != 0;
  if (v->is_string() || v->is_array() || v->is_object()) return !v->empty();
  return true;
}

// Digits with single underscores between them (Python int() and pydantic), an optional sign and
// surrounding whitespace; `allow_zero_fraction` also takes pydantic's "4.0".
std::optional<int64_t> IntFromString(const std::string& raw, bool allow_zero_fraction) {
  const std::string s(absl::StripAsciiWhitespace(raw));
  size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  std::string digits;
  for (; i < s.size() && s[i] != '.'; ++i) {
    const bool digit = std::isdigit(static_cast<unsigned char>(s[i])) != 0;
    if (digit) {
      digits += s[i];
    } else if (s[i] == '_' && i > 0 && std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
               i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      continue;
    } else {
      return std::nullopt;
    }
  }
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  if (i < s.size()) {
    if (!allow_zero_fraction || i + 1 == s.size()) return std::nullopt;
    for (++i; i < s.size(); ++i) {
      if (s[i] != '0') return std::nullopt;
    }
  }
  const int64_t v = std::strtoll(digits.c_str(), nullptr, 10);
  return negative ? -v : v;
}

// pydantic's lax int: ints, bools, integral floats, integer strings.
std::optional<int64_t> LaxInt(const Json& v) {
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) >= 9.2e18) return std::nullopt;
    return static_cast<int64_t>(d);
  }
  if (v.is_string()) return IntFromString(v.get<std::string>(), /*allow_zero_fraction=*/true);
  return std::nullopt;
}

// pydantic's lax bool: bools, 0/1, 0.0/1.0 and the usual words (case-insensitive, unstripped).
std::optional<bool> LaxBool(const Json& v) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) {
    const double d = v.get<double>();
    if (d == 0) return false;
    if (d == 1) return true;
    return std::nullopt;
  }
  if (v.is_string()) {
    const std::string s = absl::AsciiStrToLower(v.get<std::string>());
    if (s == "0" || s == "off" || s == "f" || s == "false" || s == "n" || s == "no") return false;
    if (s == "1" || s == "on" || s == "t" || s == "true" || s == "y" || s == "yes") return true;
  }
  return std::nullopt;
}

// pydantic's lax float: numbers, bools, numeric strings. Non-finite values are refused (the
// normalized JSON could not carry them).
std::optional<double> LaxFloat(const Json& v) {
  if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
  if (v.is_number()) return v.get<double>();
  if (!v.is_string()) return std::nullopt;
  const std::string raw(absl::StripAsciiWhitespace(v.get<std::string>()));
  std::string s;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == 'x' || raw[i] == 'X') return std::nullopt;  // strtod would take hex
    if (raw[i] == '_') {
      if (i == 0 || i + 1 == raw.size() || !std::isdigit(static_cast<unsigned char>(raw[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(raw[i + 1]))) {
        return std::nullopt;
      }
      continue;
    }
    s += raw[i];
  }
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(d)) return std::nullopt;
  return d;
}

std::optional<std::string> TorchDtype(const std::string& name) {
  std::string bare = name;
  if (bare.rfind("torch.", 0) == 0) bare = bare.substr(6);
  for (const auto& [alias, canonical] : kTorchDtypes) {
    if (bare == alias) return std::string("torch.") + canonical;
  }
  return std::nullopt;
}

const Json* Find(const Json& object, const std::string& key) {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

absl::StatusOr<std::vector<std::string>> StringList(const Json& v, const std::string& path,
                                                    const std::string& what) {
  if (!v.is_array()) return Invalid(path, what, v);
  std::vector<std::string> out;
  for (const Json& e : v) {
    if (!e.is_string()) return Invalid(path, what, v);
    out.push_back(e.get<std::string>());
  }
  return out;
}

// QuantizationArgs: field validators (quant_args.py:260-335), then validate_model_after
// (quant_args.py:337).
absl::StatusOr<Args> ParseArgs(const Json& v, const std::string& path) {
  if (!v.is_object()) {
    return Invalid(path, "an object of quantization args (num_bits, type, strategy, ...) or null",
                   v);
  }
  for (const auto& item : v.items()) {
    if (!Contains(kArgsFields, item.key())) {
      return UnknownField(path, item.key(), "QuantizationArgs", kArgsFields);
    }
  }
  const std::string p = path + ".";
  Args a;
  if (const Json* x = Find(v, "num_bits")) {
    auto n = LaxInt(*x);
    if (!n) return Invalid(p + "num_bits", "an integer", *x);
    a.num_bits = *n;
  }
  if (const Json* x = Find(v, "type")) {
    const std::string what = "one of " + QuotedList(kTypes);
    if (!x->is_string()) return Invalid(p + "type", what, *x);
    a.type = absl::AsciiStrToLower(x->get<std::string>());
    if (!Contains(kTypes, a.type)) return Invalid(p + "type", what, *x);
  }
  if (const Json* x = Find(v, "symmetric")) {
    auto b = LaxBool(*x);
    if (!b) return Invalid(p + "symmetric", "true or false", *x);
    a.symmetric = *b;
  }
  if (const Json* x = Find(v, "group_size"); x != nullptr && !x->is_null()) {
    // The before-validator compares the raw value with -1 (a string is a TypeError there).
    const char* what = "an integer: -1 (channel), > 0 (group) or null";
    std::optional<int64_t> n;
    if (x->is_number() || x->is_boolean()) n = LaxInt(*x);
    if (!n || *n < -1) return Invalid(p + "group_size", what, *x);
    a.group_size = *n;
  }
  std::optional<std::string> strategy;
  if (const Json* x = Find(v, "strategy"); x != nullptr && !x->is_null()) {
    const std::string what = "one of " + QuotedList(kStrategies) + " or null";
    if (!x->is_string()) return Invalid(p + "strategy", what, *x);
    strategy = absl::AsciiStrToLower(x->get<std::string>());
    if (!Contains(kStrategies, *strategy)) return Invalid(p + "strategy", what, *x);
  }
  if (const Json* x = Find(v, "block_structure"); x != nullptr && !x->is_null()) {
    std::vector<int64_t> dims;
    bool ok = true;
    if (x->is_string()) {  // legacy "RxC"
      for (absl::string_view part : absl::StrSplit(x->get<std::string>(), 'x')) {
        auto n = IntFromString(std::string(part), /*allow_zero_fraction=*/false);
        if (!n) {
          ok = false;
          break;
        }
        dims.push_back(*n);
      }
    } else if (x->is_array()) {
      for (const Json& e : *x) {
        if (e.is_boolean()) {
          dims.push_back(e.get<bool>() ? 1 : 0);
        } else if (e.is_number_integer()) {
          dims.push_back(e.get<int64_t>());
        } else {
          ok = false;
        }
      }
    } else {
      ok = false;
    }
    ok = ok && dims.size() == 2 && dims[0] > 0 && dims[1] > 0;
    if (!ok) {
      return Invalid(p + "block_structure",
                     "a list of two positive integers [rows, cols] (or the legacy string \"RxC\")",
                     *x);
    }
    a.block_structure = dims;
  }
  if (const Json* x = Find(v, "dynamic")) {
    const char* what = "true, false or \"local\"";
    if (x->is_string()) {
      if (absl::AsciiStrToLower(x->get<std::string>()) != "local") {
        return Invalid(p + "dynamic", what, *x);
      }
      a.dynamic = "local";
    } else {
      auto b = LaxBool(*x);
      if (!b) return Invalid(p + "dynamic", what, *x);
      a.dynamic = *b;
    }
  }
  if (const Json* x = Find(v, "actorder"); x != nullptr && !x->is_null()) {
    const char* what = "\"weight\", \"static\", false or null";
    if (x->is_boolean()) {
      if (x->get<bool>()) {
        return Invalid(p + "actorder",
                       std::string(what) + " (true meant the removed \"group\" ordering)", *x);
      }
    } else if (x->is_string()) {
      const std::string s = x->get<std::string>();
      const std::string lower = absl::AsciiStrToLower(s);
      if (lower == "group" || lower == "dynamic") {
        return Invalid(p + "actorder",
                       std::string(what) + " (\"group\" and \"dynamic\" were removed)", *x);
      }
      if (s == "weight" || s == "static") {
        a.actorder = s;
      } else if (auto b = LaxBool(*x)) {
        a.actorder = *b;
      } else {
        return Invalid(p + "actorder", what, *x);
      }
    } else if (auto b = LaxBool(*x)) {
      a.actorder = *b;  // the union's bool branch takes 0/1
    } else {
      return Invalid(p + "actorder", what, *x);
    }
  }
  for (auto [key, out] :
       {std::pair{"scale_dtype", &a.scale_dtype}, std::pair{"zp_dtype", &a.zp_dtype}}) {
    const Json* x = Find(v, key);
    if (x == nullptr || x->is_null()) continue;
    std::optional<std::string> dtype;
    if (x->is_string()) dtype = TorchDtype(x->get<std::string>());
    if (!dtype) {
      return Invalid(p + key, "a torch dtype name (e.g. \"float8_e4m3fn\" or \"torch.int8\")", *x);
    }
    *out = dtype;
  }
  if (const Json* x = Find(v, "observer"); x != nullptr && !x->is_null()) {
    if (!x->is_string()) return Invalid(p + "observer", "a string or null", *x);
    a.observer = x->get<std::string>();
  }
  if (const Json* x = Find(v, "observer_kwargs")) {
    if (!x->is_object()) return Invalid(p + "observer_kwargs", "an object", *x);
    a.observer_kwargs = *x;
  }

  // validate_model_after.
  const Json group_size = a.group_size ? Json(*a.group_size) : Json(nullptr);
  if (!strategy) {
    if (!a.group_size) {
      strategy = "tensor";
    } else if (*a.group_size > 0) {
      strategy = "group";
    } else if (*a.group_size == -1) {
      strategy = "channel";
    } else {
      return Invalid(p + "group_size", "-1 (channel), > 0 (group) or null (tensor)", group_size);
    }
  }
  a.strategy = *strategy;
  const std::string& s = a.strategy;
  if (s == "token" && !a.is_dynamic()) {
    return Invalid(p + "dynamic",
                   "true for strategy \"token\" (static token quantization is not supported)",
                   a.dynamic);
  }
  const bool grouped = s == "group" || s == "tensor_group";
  if (grouped && (!a.group_size || *a.group_size <= 0)) {
    return Invalid(p + "group_size", "> 0 for strategy \"" + s + "\"", group_size);
  }
  if (a.group_size && *a.group_size > 0 && !grouped) {
    return Invalid(p + "group_size",
                   "-1 or null with strategy \"" + s +
                       "\" (a positive group_size needs strategy \"group\" or \"tensor_group\")",
                   group_size);
  }
  if (s == "block" && !a.block_structure) {
    return Invalid(p + "block_structure", "[rows, cols] for strategy \"block\"", Json(nullptr));
  }
  if (a.block_structure && s != "block") {
    return Invalid(p + "strategy", "\"block\" when block_structure is given", Json(s));
  }
  if (a.is_dynamic()) {
    if (!Contains(kDynamicStrategies, s)) {
      return Invalid(p + "strategy",
                     "one of " + QuotedList(kDynamicStrategies) + " for dynamic quantization",
                     Json(s));
    }
    if (a.dynamic == "local" && s != "tensor_group") {
      return Invalid(p + "strategy", "\"tensor_group\" for dynamic \"local\"", Json(s));
    }
  }
  // The zero-point dtype default (pytorch_dtype()): float needs 4, 6 or 8 bits.
  if (!a.zp_dtype && a.type == "float" && a.num_bits != 4 && a.num_bits != 6 && a.num_bits != 8) {
    return Invalid(p + "num_bits", "4, 6 or 8 for type \"float\" (unless zp_dtype is given)",
                   Json(a.num_bits));
  }
  return a;
}

// QuantizationScheme.validate_model_after (quant_scheme.py:45).
absl::Status ValidateScheme(const Scheme& s, const std::string& path) {
  const std::string p = path + ".";
  if (s.input_activations) {
    if (!Contains(kActivationStrategies, s.input_activations->strategy)) {
      return Invalid(p + "input_activations.strategy",
                     "one of " + QuotedList(kActivationStrategies) + " for activations",
                     Json(s.input_activations->strategy));
    }
    if (!s.input_activations->actorder.is_null()) {
      return Invalid(p + "input_activations.actorder", "null (actorder applies to weights only)",
                     s.input_activations->actorder);
    }
  }
  if (s.output_activations && !s.output_activations->actorder.is_null()) {
    return Invalid(p + "output_activations.actorder", "null (actorder applies to weights only)",
                   s.output_activations->actorder);
  }
  if (s.format == "mixed-precision") {
    return Invalid(p + "format",
                   "a per-scheme format other than \"mixed-precision\" (a global format only)",
                   Json(*s.format));
  }
  return absl::OkStatus();
}

absl::StatusOr<Scheme> ParseScheme(const Json& v, const std::string& path) {
  for (const auto& item : v.items()) {
    if (!Contains(kSchemeFields, item.key())) {
      return UnknownField(path, item.key(), "QuantizationScheme", kSchemeFields);
    }
  }
  const std::string p = path + ".";
  Scheme s;
  const Json* targets = Find(v, "targets");
  const std::string targets_what = "a list of module names, class names or \"re:\" patterns";
  if (targets == nullptr) return Missing(p + "targets", targets_what);
  QS_ASSIGN_OR_RETURN(s.targets, StringList(*targets, p + "targets", targets_what));
  for (auto [key, out] :
       {std::pair{"weights", &s.weights}, std::pair{"input_activations", &s.input_activations},
        std::pair{"output_activations", &s.output_activations}}) {
    const Json* x = Find(v, key);
    if (x == nullptr || x->is_null()) continue;
    QS_ASSIGN_OR_RETURN(*out, ParseArgs(*x, p + key));
  }
  if (const Json* x = Find(v, "format"); x != nullptr && !x->is_null()) {
    const std::string what = "one of " + QuotedList(kCompressionFormats) + " or null";
    if (!x->is_string() || !Contains(kCompressionFormats, x->get<std::string>())) {
      return Invalid(p + "format", what, *x);
    }
    s.format = x->get<std::string>();
  }
  QS_RETURN_IF_ERROR(ValidateScheme(s, path));
  return s;
}

// A group given as a list of targets: the group's name (upper-cased) picks a preset
// (QuantizationConfig.model_post_init -> preset_name_to_scheme).
absl::StatusOr<Scheme> PresetScheme(const std::string& name, std::vector<std::string> targets,
                                    const std::string& path) {
  const std::string upper = absl::AsciiStrToUpper(name);
  for (const Preset& preset : kPresets) {
    if (upper != preset.name) continue;
    Scheme s;
    s.targets = std::move(targets);
    if (preset.weights != nullptr) {
      QS_ASSIGN_OR_RETURN(s.weights, ParseArgs(Json::parse(preset.weights), path + ".weights"));
    }
    if (preset.input_activations != nullptr) {
      QS_ASSIGN_OR_RETURN(s.input_activations, ParseArgs(Json::parse(preset.input_activations),
                                                         path + ".input_activations"));
    }
    return s;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      path, " is a list of targets, so the group must be named after a preset scheme; \"", upper,
      "\" is not one of ", QuotedList(CompressedTensorsConfig::PresetNames())));
}

absl::Status StrictBool(const Json& root, const std::string& key, bool* out) {
  const Json* x = Find(root, key);
  if (x == nullptr) return absl::OkStatus();
  if (!x->is_boolean()) return Invalid("quantization_config." + key, "true or false", *x);
  *out = x->get<bool>();
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> CompressedTensorsConfig::PresetNames() {
  std::vector<std::string> names;
  for (const Preset& preset : kPresets) names.push_back(preset.name);
  return names;
}

bool CompressedTensorsConfig::has_fp8_modules() const {
  if (!quantization) return false;
  for (const auto& [name, scheme] : quantization->config_groups) {
    if (scheme.weights && scheme.weights->type == "float" && scheme.weights->num_bits == 8) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<CompressedTensorsConfig> CompressedTensorsConfig::Parse(const std::string& text) {
  // ordered_json keeps config_groups in the JSON's order, as Python dicts do.
  Json root = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("quantization_config is not a JSON object");
  }
  // CompressedTensorsConfig.from_dict: a nested "quantization_config" replaces the whole dict.
  if (const Json* nested = Find(root, "quantization_config")) {
    if (!nested->is_object()) {
      return Invalid("quantization_config.quantization_config",
                     "an object (the nested compressed-tensors config)", *nested);
    }
    Json inner = *nested;
    root = std::move(inner);
  }
  const std::string P = "quantization_config.";
  CompressedTensorsConfig c;

  // CompressedTensorsConfig.__init__ (quantization_config.py:1126): the loading attributes.
  std::optional<bool> run_compressed;
  if (const Json* x = Find(root, "run_compressed"); x != nullptr && !x->is_null()) {
    if (!x->is_boolean()) return Invalid(P + "run_compressed", "true, false or null", *x);
    run_compressed = x->get<bool>();
  }
  QS_RETURN_IF_ERROR(StrictBool(root, "dequantize", &c.dequantize));
  QS_RETURN_IF_ERROR(StrictBool(root, "use_optimized_inference", &c.use_optimized_inference));
  if (run_compressed) c.dequantize = c.dequantize || !*run_compressed;

  const Json* groups = Find(root, "config_groups");
  const Json* kv_cache = Find(root, "kv_cache_scheme");
  if (Truthy(groups) || Truthy(kv_cache)) {
    // QuantizationConfig.model_validate (quant_config.py:131); unknown keys are ignored.
    Quantization q;
    const std::string groups_what = "an object mapping group names to schemes";
    if (groups == nullptr) return Missing(P + "config_groups", groups_what);
    if (!groups->is_object()) return Invalid(P + "config_groups", groups_what, *groups);
    for (const auto& item : groups->items()) {
      const std::string path = P + "config_groups." + item.key();
      const Json& value = item.value();
      if (value.is_object()) {
        QS_ASSIGN_OR_RETURN(Scheme s, ParseScheme(value, path));
        q.config_groups.emplace_back(item.key(), std::move(s));
      } else if (value.is_array()) {
        QS_ASSIGN_OR_RETURN(
            auto targets,
            StringList(value, path, "a list of targets (strings) for a preset-named group"));
        QS_ASSIGN_OR_RETURN(Scheme s, PresetScheme(item.key(), std::move(targets), path));
        q.config_groups.emplace_back(item.key(), std::move(s));
      } else {
        return Invalid(path,
                       "a QuantizationScheme object, or a list of targets in a group named after "
                       "a preset scheme",
                       value);
      }
    }
    if (const Json* x = Find(root, "quant_method")) {
      if (!x->is_string()) return Invalid(P + "quant_method", "\"compressed-tensors\"", *x);
      q.quant_method = x->get<std::string>();
    }
    if (const Json* x = Find(root, "format")) {
      if (!x->is_string()) return Invalid(P + "format", "a string (e.g. \"pack-quantized\")", *x);
      q.format = x->get<std::string>();
    }
    if (const Json* x = Find(root, "quantization_status")) {
      if (!x->is_string() || !Contains(kStatuses, x->get<std::string>())) {
        return Invalid(P + "quantization_status", "one of " + QuotedList(kStatuses), *x);
      }
      q.quantization_status = x->get<std::string>();
    }
    if (kv_cache != nullptr && !kv_cache->is_null()) {
      QS_ASSIGN_OR_RETURN(q.kv_cache_scheme, ParseArgs(*kv_cache, P + "kv_cache_scheme"));
    }
    if (const Json* x = Find(root, "global_compression_ratio"); x != nullptr && !x->is_null()) {
      auto d = LaxFloat(*x);
      if (!d) return Invalid(P + "global_compression_ratio", "a finite number or null", *x);
      q.global_compression_ratio = *d;
    }
    if (const Json* x = Find(root, "ignore"); x != nullptr && !x->is_null()) {
      QS_ASSIGN_OR_RETURN(
          q.ignore, StringList(*x, P + "ignore",
                               "a list of module names, class names or \"re:\" patterns, or null"));
    }
    if (const Json* x = Find(root, "moe_sparsity_config"); x != nullptr && !x->is_null()) {
      // ExpertSparsityConfig (config/expert_sparsity.py): method and StrictInt counts.
      const std::string mp = P + "moe_sparsity_config";
      if (!x->is_object())
        return Invalid(mp, "an object {\"method\", \"num_experts\"} or null", *x);
      const Json* method = Find(*x, "method");
      const Json* experts = Find(*x, "num_experts");
      if (method == nullptr) return Missing(mp + ".method", "\"prune\" or \"novice\"");
      if (!method->is_string() ||
          (method->get<std::string>() != "prune" && method->get<std::string>() != "novice")) {
        return Invalid(mp + ".method", "one of \"prune\", \"novice\"", *method);
      }
      const char* experts_what = "a list of per-layer expert counts (integers, or null for dense)";
      if (experts == nullptr) return Missing(mp + ".num_experts", experts_what);
      if (!experts->is_array()) return Invalid(mp + ".num_experts", experts_what, *experts);
      for (const Json& e : *experts) {
        if (!e.is_null() && !e.is_number_integer()) {
          return Invalid(mp + ".num_experts", experts_what, *experts);
        }
      }
      q.moe_sparsity_config = Json{{"method", *method}, {"num_experts", *experts}};
    }
    c.quantization = std::move(q);
  }

  // CompressedTensorsConfig.post_init (run by the quantizer's constructor): the optimized FP8
  // path needs quantized weights to run on and an FP8 group.
  if (c.use_optimized_inference && (c.dequantize || !c.has_fp8_modules())) {
    c.use_optimized_inference = false;
  }
  return c;
}

Json CompressedTensorsConfig::QuantizationArgs::ToJson() const {
  // model_dump with QuantizationArgs._serialize's omissions (quant_args.py:240).
  Json j;
  j["num_bits"] = num_bits;
  j["type"] = type;
  j["symmetric"] = symmetric;
  j["group_size"] = group_size ? Json(*group_size) : Json(nullptr);
  j["strategy"] = strategy;
  if (block_structure) j["block_structure"] = *block_structure;
  j["dynamic"] = dynamic;
  if (!actorder.is_null()) j["actorder"] = actorder;
  if (scale_dtype) j["scale_dtype"] = *scale_dtype;
  if (zp_dtype && !symmetric) j["zp_dtype"] = *zp_dtype;  // serialize_dtype: None if symmetric
  if (observer) j["observer"] = *observer;
  if (!observer_kwargs.empty()) j["observer_kwargs"] = observer_kwargs;
  return j;
}

Json CompressedTensorsConfig::QuantizationScheme::ToJson() const {
  auto args = [](const std::optional<QuantizationArgs>& a) {
    return a ? a->ToJson() : Json(nullptr);
  };
  Json j;
  j["targets"] = targets;
  j["weights"] = args(weights);
  j["input_activations"] = args(input_activations);
  j["output_activations"] = args(output_activations);
  j["format"] = format ? Json(*format) : Json(nullptr);
  return j;
}

std::string CompressedTensorsConfig::ToJson() const {
  Json j;
  if (!quantization) {
    j["quant_method"] = "compressed-tensors";
    return j.dump();
  }
  const Quantization& q = *quantization;
  Json groups = Json::object();
  for (const auto& [name, scheme] : q.config_groups) groups[name] = scheme.ToJson();
  j["config_groups"] = groups;
  j["quant_method"] = q.quant_method;
  j["kv_cache_scheme"] = q.kv_cache_scheme ? q.kv_cache_scheme->ToJson() : Json(nullptr);
  j["format"] = q.format;
  j["quantization_status"] = q.quantization_status;
  j["global_compression_ratio"] =
      q.global_compression_ratio ? Json(*q.global_compression_ratio) : Json(nullptr);
  j["ignore"] = q.ignore ? Json(*q.ignore) : Json(nullptr);
  j["moe_sparsity_config"] = q.moe_sparsity_config;
  return j.dump();
}

}  // namespace quantserve::quant

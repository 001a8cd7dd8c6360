#include "quant/methods/hqq/hqq_config.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {
namespace {

using Json = nlohmann::json;

constexpr double kSupportedBits[] = {8, 6, 5, 4, 3, 2, 1.58, 1};
constexpr char kBitsWhat[] = "one of 8, 6, 5, 4, 3, 2, 1.58, 1 (hqq's Quantizer.SUPPORTED_BITS)";

// ConfigReader names fields from the top of quantization_config; a nested object's errors get
// their path inserted ("quantization_config.dynamic_config.mlp.up_proj.nbits ...").
absl::Status AtPath(const absl::Status& status, const std::string& path) {
  if (status.ok() || path.empty()) return status;
  std::string message(status.message());
  const std::string root = "quantization_config.";
  if (absl::StartsWith(message, root)) message.insert(root.size(), path);
  return absl::Status(status.code(), message);
}

absl::Status Unimplemented(const std::string& path, const std::string& key, const Json& got,
                           const std::string& why) {
  return absl::UnimplementedError(
      absl::StrCat("quantization_config.", path, key, "=", got.dump(),
                   " is accepted by hqq but not supported here: ", why));
}

// Keys outside `allowed` are Python TypeErrors (unexpected keyword argument) in hqq.
absl::Status OnlyKeys(const ConfigReader& r, const std::vector<std::string>& allowed,
                      const std::string& takes) {
  for (const auto& [key, value] : r.object().items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("quantization_config.", key, " is not an argument of ", takes, " (it takes ",
                       absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadNbits(const ConfigReader& r, HqqWeightQuantParams* p) {
  auto it = r.object().find("nbits");
  if (it == r.object().end()) return absl::OkStatus();
  if (!it->is_number()) return r.Invalid("nbits", kBitsWhat);
  const double v = it->get<double>();
  if (std::none_of(std::begin(kSupportedBits), std::end(kSupportedBits),
                   [&](double b) { return b == v; })) {
    return r.Invalid("nbits", kBitsWhat);
  }
  p->nbits = v;
  p->nbits_is_float = it->is_number_float();
  return absl::OkStatus();
}

// `multiple_of_8`: BaseQuantizeConfig's assert; a to_dict quant_config skips BaseQuantizeConfig,
// so there hqq only needs a positive size dividing the weight (checked at load).
absl::Status ReadGroupSize(const ConfigReader& r, bool multiple_of_8, HqqWeightQuantParams* p) {
  auto it = r.object().find("group_size");
  if (it == r.object().end()) return absl::OkStatus();
  if (it->is_null()) {
    p->group_size = std::nullopt;
    return absl::OkStatus();
  }
  const char* what = multiple_of_8 ? "null or a positive multiple of 8 (hqq asserts "
                                     "group_size % 8 == 0)"
                                   : "null or a positive integer";
  if (!it->is_number_integer()) return r.Invalid("group_size", what);
  const int64_t g = it->get<int64_t>();
  if (g <= 0 || (multiple_of_8 && g % 8 != 0)) return r.Invalid("group_size", what);
  p->group_size = g;
  return absl::OkStatus();
}

// `null_is_1`: HqqConfig's own axis=None -> 1; elsewhere hqq's Quantizer asserts axis in [0, 1].
absl::Status ReadAxis(const ConfigReader& r, bool null_is_1, HqqWeightQuantParams* p) {
  auto it = r.object().find("axis");
  if (it == r.object().end()) return absl::OkStatus();
  if (it->is_null() && null_is_1) {
    p->axis = 1;
    return absl::OkStatus();
  }
  if (!it->is_number_integer() || (it->get<int64_t>() != 0 && it->get<int64_t>() != 1)) {
    return r.Invalid("axis", "0 or 1");
  }
  p->axis = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadOffloadMeta(const ConfigReader& r, bool* offload) {
  QS_RETURN_IF_ERROR(r.Bool("offload_meta", offload));
  if (*offload) {
    return Unimplemented("", "offload_meta", true,
                         "hqq deprecated meta-data offloading; it replaces scale/zero by a "
                         "pinned host zero_scale tensor");
  }
  return absl::OkStatus();
}

// hqq's BaseQuantizeConfig(**kwargs) -> (params, the dict it returns).
absl::Status ParseBaseQuantizeConfig(const ConfigReader& r, HqqWeightQuantParams* p, Json* dict) {
  QS_RETURN_IF_ERROR(OnlyKeys(
      r,
      {"nbits", "group_size", "quant_zero", "quant_scale", "offload_meta", "view_as_float", "axis"},
      "hqq's BaseQuantizeConfig"));
  QS_RETURN_IF_ERROR(ReadNbits(r, p));
  QS_RETURN_IF_ERROR(ReadGroupSize(r, /*multiple_of_8=*/true, p));
  bool quant_zero = false, quant_scale = false, offload = false;
  QS_RETURN_IF_ERROR(r.Bool("quant_zero", &quant_zero));
  QS_RETURN_IF_ERROR(r.Bool("quant_scale", &quant_scale));
  QS_RETURN_IF_ERROR(ReadOffloadMeta(r, &offload));
  QS_RETURN_IF_ERROR(r.Bool("view_as_float", &p->view_as_float));
  QS_RETURN_IF_ERROR(ReadAxis(r, /*null_is_1=*/false, p));
  p->round_zero = p->nbits == 4;

  Json nbits = p->nbits_is_float ? Json(p->nbits) : Json(static_cast<int64_t>(p->nbits));
  Json group = p->group_size ? Json(*p->group_size) : Json(nullptr);
  // Quantized scales/zeros are deprecated: HQQLinear drops these settings with a warning, but
  // to_dict() still shows them.
  *dict = Json::object();
  (*dict)["weight_quant_params"] = {{"nbits", nbits},
                                    {"channel_wise", true},
                                    {"group_size", group},
                                    {"optimize", true},
                                    {"round_zero", p->round_zero},
                                    {"axis", p->axis},
                                    {"view_as_float", p->view_as_float}};
  (*dict)["scale_quant_params"] =
      quant_scale
          ? Json{{"nbits", 8}, {"channel_wise", true}, {"group_size", 128}, {"optimize", false}}
          : Json(nullptr);
  (*dict)["zero_quant_params"] = quant_zero ? Json{{"nbits", 8},
                                                   {"channel_wise", false},
                                                   {"group_size", nullptr},
                                                   {"optimize", false}}
                                            : Json(nullptr);
  (*dict)["offload_meta"] = false;
  return absl::OkStatus();
}

// One layer's quant_config as to_dict() wrote it: the four keys HQQLinear reads, with
// weight_quant_params passed as Quantizer.quantize(**kwargs) (whose defaults fill the gaps).
absl::Status ParseLayerConfig(const Json& object, const std::string& path,
                              HqqWeightQuantParams* p) {
  const std::vector<std::string> keys = {"weight_quant_params", "scale_quant_params",
                                         "zero_quant_params", "offload_meta"};
  ConfigReader r(object);
  QS_RETURN_IF_ERROR(AtPath(OnlyKeys(r, keys, "HQQLinear.quantize"), path));
  for (const auto& key : keys) {
    if (!object.contains(key)) {
      return AtPath(r.Invalid(key, "present (HQQLinear reads it)"), path);
    }
  }
  bool offload = false;
  QS_RETURN_IF_ERROR(AtPath(ReadOffloadMeta(r, &offload), path));
  if (!object.at("offload_meta").is_boolean()) {
    return AtPath(r.Invalid("offload_meta", "true or false"), path);
  }
  const Json& w = object.at("weight_quant_params");
  if (!w.is_object()) {
    return AtPath(r.Invalid("weight_quant_params", "an object of Quantizer.quantize arguments"),
                  path);
  }
  const std::string wpath = path + "weight_quant_params.";
  ConfigReader wr(w);
  QS_RETURN_IF_ERROR(AtPath(OnlyKeys(wr,
                                     {"nbits", "channel_wise", "group_size", "optimize",
                                      "round_zero", "axis", "view_as_float", "bitpack"},
                                     "hqq's Quantizer.quantize"),
                            wpath));
  if (!w.contains("group_size")) {
    return AtPath(wr.Invalid("group_size", "present (HQQLinear.initialize reads it)"), wpath);
  }
  // Quantizer.quantize's own defaults (not BaseQuantizeConfig's).
  *p = HqqWeightQuantParams();
  p->axis = 0;
  p->round_zero = false;
  p->has_channel_wise = w.contains("channel_wise");
  p->has_optimize = w.contains("optimize");
  p->has_round_zero = w.contains("round_zero");
  p->has_bitpack = w.contains("bitpack");
  if (w.contains("nbits") && w.at("nbits").is_null()) {
    return AtPath(wr.Invalid("nbits", kBitsWhat), wpath);
  }
  QS_RETURN_IF_ERROR(AtPath(ReadNbits(wr, p), wpath));
  QS_RETURN_IF_ERROR(AtPath(ReadGroupSize(wr, /*multiple_of_8=*/false, p), wpath));
  QS_RETURN_IF_ERROR(AtPath(ReadAxis(wr, /*null_is_1=*/false, p), wpath));
  bool channel_wise = true, bitpack = true;
  QS_RETURN_IF_ERROR(AtPath(wr.Bool("channel_wise", &channel_wise), wpath));
  QS_RETURN_IF_ERROR(AtPath(wr.Bool("bitpack", &bitpack), wpath));
  QS_RETURN_IF_ERROR(AtPath(wr.Bool("optimize", &p->optimize), wpath));
  QS_RETURN_IF_ERROR(AtPath(wr.Bool("round_zero", &p->round_zero), wpath));
  QS_RETURN_IF_ERROR(AtPath(wr.Bool("view_as_float", &p->view_as_float), wpath));
  if (!channel_wise) {
    return Unimplemented(wpath, "channel_wise", false,
                         "per-tensor HQQ (one scale/zero for the whole weight) is not "
                         "implemented");
  }
  if (!bitpack) {
    return Unimplemented(wpath, "bitpack", false,
                         "unpacked codes (W_q in the weight dtype, packing None) are not "
                         "implemented");
  }
  return absl::OkStatus();
}

// HqqConfig(**kwargs).
absl::Status ParseConstructorForm(const ConfigReader& r, HqqConfig* config) {
  HqqWeightQuantParams top;
  QS_RETURN_IF_ERROR(ReadAxis(r, /*null_is_1=*/true, &top));
  auto dynamic = r.object().find("dynamic_config");
  if (dynamic != r.object().end() && !dynamic->is_null()) {
    if (!dynamic->is_object() || dynamic->empty()) {
      return r.Invalid("dynamic_config",
                       "a non-empty object of linear tag -> BaseQuantizeConfig arguments");
    }
    config->quant_config_json = Json::object();
    for (const auto& [tag, kwargs] : dynamic->items()) {
      const std::string path = absl::StrCat("dynamic_config.", tag, ".");
      if (!kwargs.is_object()) {
        return r.Invalid("dynamic_config",
                         absl::StrCat("an object of BaseQuantizeConfig arguments for each tag "
                                      "(not for '",
                                      tag, "')"));
      }
      HqqWeightQuantParams p;
      Json dict;
      QS_RETURN_IF_ERROR(AtPath(ParseBaseQuantizeConfig(ConfigReader(kwargs), &p, &dict), path));
      config->tag_configs.emplace(tag, p);
      config->quant_config_json[tag] = std::move(dict);
    }
  } else {
    if (r.object().contains("nbits") && r.object().at("nbits").is_null()) {
      return r.Invalid("nbits", kBitsWhat);
    }
    Json args = Json::object();
    for (const char* key : {"nbits", "group_size", "view_as_float"}) {
      if (r.object().contains(key)) args[key] = r.object().at(key);
    }
    args["axis"] = top.axis;
    HqqWeightQuantParams p;
    Json dict;
    QS_RETURN_IF_ERROR(ParseBaseQuantizeConfig(ConfigReader(args), &p, &dict));
    config->quant_config = p;
    config->quant_config_json = std::move(dict);
  }
  return absl::OkStatus();
}

absl::Status ReadSkipModules(const ConfigReader& r, bool required, HqqConfig* config) {
  auto it = r.object().find("skip_modules");
  if (it == r.object().end()) {
    if (!required) return absl::OkStatus();
    return r.Invalid("skip_modules",
                     "a list of linear tags (HqqConfig.from_dict reads it with quant_config)");
  }
  if (it->is_null()) return r.Invalid("skip_modules", "a list of linear tags");
  std::optional<std::vector<std::string>> list;
  QS_RETURN_IF_ERROR(r.StringList("skip_modules", &list));
  config->skip_modules = *list;
  return absl::OkStatus();
}

}  // namespace

int64_t HqqWeightQuantParams::max_code() const {
  return static_cast<int64_t>(std::nearbyint(std::pow(2.0, nbits) - 1.0));
}

absl::StatusOr<HqqConfig> HqqConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader r, ConfigReader::Parse(json));
  HqqConfig config;
  auto qc = r.object().find("quant_config");
  if (qc == r.object().end()) {
    QS_RETURN_IF_ERROR(ParseConstructorForm(r, &config));
    QS_RETURN_IF_ERROR(ReadSkipModules(r, /*required=*/false, &config));
    return config;
  }
  // HqqConfig.from_dict: a default HqqConfig whose quant_config and skip_modules are replaced
  // verbatim; every other key is ignored.
  QS_RETURN_IF_ERROR(ReadSkipModules(r, /*required=*/true, &config));
  if (!qc->is_object() || qc->empty()) {
    return r.Invalid("quant_config",
                     "an object: one layer config or linear tag -> layer config (or null)");
  }
  if (qc->contains("weight_quant_params")) {
    HqqWeightQuantParams p;
    QS_RETURN_IF_ERROR(ParseLayerConfig(*qc, "quant_config.", &p));
    config.quant_config = p;
  } else {
    for (const auto& [tag, layer] : qc->items()) {
      const std::string path = absl::StrCat("quant_config.", tag, ".");
      if (layer.is_null()) {
        config.tag_configs.emplace(tag, std::nullopt);
        continue;
      }
      if (!layer.is_object()) {
        return r.Invalid("quant_config", absl::StrCat("a layer config object or null for each "
                                                      "linear tag (not for '",
                                                      tag, "')"));
      }
      HqqWeightQuantParams p;
      QS_RETURN_IF_ERROR(ParseLayerConfig(layer, path, &p));
      config.tag_configs.emplace(tag, p);
    }
  }
  config.quant_config_json = *qc;
  return config;
}

std::string HqqConfig::ToJson() const {
  return Json{
      {"quant_config", quant_config_json}, {"quant_method", "hqq"}, {"skip_modules", skip_modules}}
      .dump();
}

}  // namespace quantserve::quant

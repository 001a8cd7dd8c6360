#include "quant/methods/quanto/quanto_config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {
namespace {

// optimum-quanto qtype names (qtype.name) <-> QuantoConfig names.
constexpr std::pair<const char*, const char*> kQmapNames[] = {
    {"qint8", "int8"}, {"qint4", "int4"}, {"qint2", "int2"}, {"qfloat8_e4m3fn", "float8"}};

const char* FromQmapName(const std::string& name) {
  for (const auto& [qmap, ours] : kQmapNames) {
    if (name == qmap) return ours;
  }
  return nullptr;
}

const char* ToQmapName(const std::string& name) {
  for (const auto& [qmap, ours] : kQmapNames) {
    if (name == ours) return qmap;
  }
  return "none";
}

nlohmann::ordered_json QmapJson(const std::map<std::string, QuantoConfig::ModuleQTypes>& map) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& [module, q] : map) {
    out[module] = {{"weights", ToQmapName(q.weights)},
                   {"activations", q.activations ? ToQmapName(*q.activations) : "none"}};
  }
  return out;
}

absl::StatusOr<std::map<std::string, QuantoConfig::ModuleQTypes>> ParseQuantizationMap(
    const nlohmann::json& map) {
  if (!map.is_object()) {
    return absl::InvalidArgumentError(
        "quantization_config.quantization_map (quanto_qmap.json) must be an object of "
        "module name -> {\"weights\", \"activations\"}");
  }
  std::map<std::string, QuantoConfig::ModuleQTypes> out;
  for (const auto& item : map.items()) {
    // Named references, not a structured binding: clang before 16 cannot capture those.
    const std::string& module = item.key();
    const nlohmann::json& entry = item.value();
    auto field = [&](const char* key) -> absl::StatusOr<std::string> {
      auto it = entry.is_object() ? entry.find(key) : entry.end();
      if (!entry.is_object() || it == entry.end() || !it->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "quanto_qmap.json entry '", module, "' needs string fields \"weights\" and "
            "\"activations\" (got ", entry.dump(), ")"));
      }
      return it->get<std::string>();
    };
    QS_ASSIGN_OR_RETURN(std::string weights, field("weights"));
    QS_ASSIGN_OR_RETURN(std::string activations, field("activations"));
    QuantoConfig::ModuleQTypes q;
    const char* w = FromQmapName(weights);
    if (w == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quanto_qmap.json: module '", module, "' has weights \"", weights,
          "\"; supported: \"qint8\", \"qint4\", \"qint2\", \"qfloat8_e4m3fn\""));
    }
    q.weights = w;
    if (activations != "none") {
      const char* a = FromQmapName(activations);
      if (a == nullptr || (std::string(a) != "int8" && std::string(a) != "float8")) {
        return absl::InvalidArgumentError(absl::StrCat(
            "quanto_qmap.json: module '", module, "' has activations \"", activations,
            "\"; supported: \"none\", \"qint8\", \"qfloat8_e4m3fn\""));
      }
      q.activations = a;
    }
    out.emplace(module, std::move(q));
  }
  return out;
}

}  // namespace

absl::StatusOr<QuantoConfig> QuantoConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::Parse(json));
  QuantoConfig c;
  if (auto m = reader.object().find("quantization_map"); m != reader.object().end()) {
    QS_ASSIGN_OR_RETURN(c.quantization_map, ParseQuantizationMap(*m));
    return c;
  }
  const std::vector<std::string> weights = {"float8", "int8", "int4", "int2"};
  // An explicit null is not a default here: transformers stores None and post_init rejects it.
  auto w = reader.object().find("weights");
  if (w != reader.object().end() && w->is_null()) {
    return reader.Invalid("weights", "one of " + QuotedList(weights));
  }
  QS_RETURN_IF_ERROR(reader.Enum("weights", &c.weights, weights));
  if (reader.Has("activations")) {
    const std::vector<std::string> activations = {"int8", "float8"};
    std::string a;
    if (!reader.Enum("activations", &a, activations).ok()) {
      return reader.Invalid("activations", "null or one of " + QuotedList(activations));
    }
    c.activations = a;
  }
  QS_RETURN_IF_ERROR(reader.StringList("modules_to_not_convert", &c.modules_to_not_convert));
  return c;
}

std::string QuantoConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["quant_method"] = "quanto";
  if (quantization_map.has_value()) {
    j["quantization_map"] = QmapJson(*quantization_map);
    return j.dump();
  }
  j["weights"] = weights;
  j["activations"] =
      activations.has_value() ? nlohmann::ordered_json(*activations) : nlohmann::ordered_json();
  j["modules_to_not_convert"] = modules_to_not_convert.has_value()
                                    ? nlohmann::ordered_json(*modules_to_not_convert)
                                    : nlohmann::ordered_json();
  return j.dump();
}

std::string QuantoConfig::QuantizationMapJson(const std::map<std::string, ModuleQTypes>& map) {
  return QmapJson(map).dump();
}

}  // namespace quantserve::quant

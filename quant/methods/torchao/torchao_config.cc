#include "quant/methods/torchao/torchao_config.h"

#include <algorithm>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "quant/config_reader.h"

namespace quantserve::quant {
namespace {

using OJson = nlohmann::ordered_json;

constexpr char kInt4[] = "Int4WeightOnlyConfig";
constexpr char kInt8Wo[] = "Int8WeightOnlyConfig";
constexpr char kInt8Dyn[] = "Int8DynamicActivationInt8WeightConfig";
constexpr char kFqn[] = "FqnToConfig";
constexpr char kModuleFqn[] = "ModuleFqnToConfig";
// The version torchao 0.18 builds its int configs with (version 1 was removed).
constexpr int64_t kIntConfigVersion = 2;

const std::vector<std::string>& SupportedTypes() {
  static const std::vector<std::string> kTypes = {kInt4, kInt8Wo, kInt8Dyn, kFqn, kModuleFqn};
  return kTypes;
}

// Legacy transformers 4.x string quant types and the AOBaseConfig each stands for.
const std::vector<std::pair<std::string, std::string>>& LegacyTypes() {
  static const std::vector<std::pair<std::string, std::string>> kTypes = {
      {"int4_weight_only", kInt4},
      {"int8_weight_only", kInt8Wo},
      {"int8_dynamic_activation_int8_weight", kInt8Dyn}};
  return kTypes;
}

std::string Got(const OJson* v) { return v == nullptr ? "nothing" : v->dump(); }

absl::Status Invalid(const std::string& path, const std::string& what, const OJson* got) {
  return absl::InvalidArgumentError(
      absl::StrCat("quantization_config.", path, " must be ", what, " (got ", Got(got), ")"));
}

const OJson* Find(const OJson& object, const std::string& key) {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// Where a config's fields come from: the `_data` of a config_to_dict object, or a legacy
// string type's quant_type_kwargs (whose unknown-key message follows 4.x's signature check).
struct Fields {
  const OJson& data;
  std::string path;   // "quant_type.default._data" or "quant_type_kwargs"
  std::string owner;  // class name, or the legacy string
  bool legacy = false;
};

absl::Status CheckKnownFields(const Fields& f, const std::vector<std::string>& known) {
  for (auto it = f.data.begin(); it != f.data.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) != known.end()) continue;
    std::vector<std::string> shown;
    for (const auto& k : known) {
      if (k != "version") shown.push_back(k);
    }
    if (f.legacy) {
      return absl::InvalidArgumentError(
          absl::StrCat("quantization_config.", f.path, " has unexpected keyword arg \"", it.key(),
                       "\" for ", f.owner, " (valid kwargs: ", QuotedList(shown), ")"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("quantization_config.", f.path, " has unknown field \"", it.key(), "\" for ",
                     f.owner, " (its fields: ", QuotedList(shown), ")"));
  }
  return absl::OkStatus();
}

std::string FieldPath(const Fields& f, const std::string& key) {
  return absl::StrCat(f.path, ".", key);
}

// A JSON bool field; `*json_out` gets what to_dict would write back.
absl::Status BoolField(const Fields& f, const std::string& key, bool def, bool* out,
                       OJson* json_out, bool nullable = false) {
  const OJson* v = Find(f.data, key);
  if (v == nullptr) {
    *out = def;
    *json_out = def;
    return absl::OkStatus();
  }
  if (nullable && v->is_null()) {
    *out = false;  // Optional[bool] None is falsy
    *json_out = nullptr;
    return absl::OkStatus();
  }
  if (!v->is_boolean()) {
    return Invalid(FieldPath(f, key), nullable ? "true, false or null" : "true or false", v);
  }
  *out = v->get<bool>();
  *json_out = *out;
  return absl::OkStatus();
}

// A torchao enum field: {"_type": enum_name, "_data": MEMBER}, or, for str-valued enums
// (Int4PackingFormat, Int4ChooseQParamsAlgorithm), the member's plain string value.
// `members` lists {NAME, value}; returns the member NAME.
absl::Status EnumField(const Fields& f, const std::string& key, const std::string& enum_name,
                       const std::vector<std::pair<std::string, std::string>>& members,
                       bool str_enum, const std::string& def, std::string* out, OJson* json_out) {
  const OJson* v = Find(f.data, key);
  std::vector<std::string> names;
  std::vector<std::string> values;
  for (const auto& [name, value] : members) {
    names.push_back(name);
    values.push_back(value);
  }
  if (v == nullptr) {
    *out = def;
    *json_out = OJson{{"_type", enum_name}, {"_data", def}};
    return absl::OkStatus();
  }
  std::string what =
      absl::StrCat("{\"_type\": \"", enum_name, "\", \"_data\": one of ", QuotedList(names), "}");
  if (str_enum) absl::StrAppend(&what, " or one of ", QuotedList(values));
  if (str_enum && v->is_string()) {
    for (const auto& [name, value] : members) {
      if (v->get<std::string>() == value) {
        *out = name;
        *json_out = value;
        return absl::OkStatus();
      }
    }
    return Invalid(FieldPath(f, key), what, v);
  }
  if (!v->is_object()) return Invalid(FieldPath(f, key), what, v);
  const OJson* type = Find(*v, "_type");
  const OJson* data = Find(*v, "_data");
  if (type == nullptr || data == nullptr || *type != enum_name || !data->is_string()) {
    return Invalid(FieldPath(f, key), what, v);
  }
  for (const auto& [name, value] : members) {
    if (data->get<std::string>() == name) {
      *out = name;
      *json_out = OJson{{"_type", enum_name}, {"_data", name}};
      return absl::OkStatus();
    }
  }
  return Invalid(FieldPath(f, key), what, v);
}

// One granularity object; `allowed` are the accepted kinds' class names.
absl::Status ParseGranularity(const OJson& v, const std::string& path,
                              const std::vector<std::string>& allowed, TorchAoGranularity* out,
                              OJson* json_out) {
  const std::string what = absl::StrCat("a granularity {\"_type\": one of ", QuotedList(allowed),
                                        ", \"_version\": 1, \"_data\": {...}}");
  if (!v.is_object()) return Invalid(path, what, &v);
  const OJson* type = Find(v, "_type");
  const OJson* data = Find(v, "_data");
  if (type == nullptr || !type->is_string() || data == nullptr || !data->is_object()) {
    return Invalid(path, what, &v);
  }
  const std::string name = type->get<std::string>();
  if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
    return Invalid(absl::StrCat(path, "._type"), absl::StrCat("one of ", QuotedList(allowed)),
                   type);
  }
  // Granularities have no version field: any other _version reaches their constructor.
  if (const OJson* ver = Find(v, "_version"); ver != nullptr && *ver != 1) {
    return Invalid(absl::StrCat(path, "._version"), "1 (granularities have one version)", ver);
  }
  const std::string data_path = absl::StrCat(path, "._data");
  OJson out_data = OJson::object();
  auto only = [&](const std::vector<std::string>& keys) -> absl::Status {
    for (auto it = data->begin(); it != data->end(); ++it) {
      if (std::find(keys.begin(), keys.end(), it.key()) == keys.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "quantization_config.", data_path, " has unknown field \"", it.key(), "\" for ", name,
            keys.empty() ? " (it has no fields)"
                         : absl::StrCat(" (its fields: ", QuotedList(keys), ")")));
      }
    }
    return absl::OkStatus();
  };
  if (name == "PerTensor") {
    QS_RETURN_IF_ERROR(only({}));
    out->kind = TorchAoGranularity::Kind::kPerTensor;
  } else if (name == "PerRow") {
    QS_RETURN_IF_ERROR(only({"dim"}));
    out->kind = TorchAoGranularity::Kind::kPerRow;
    out->dim = -1;
    if (const OJson* dim = Find(*data, "dim"); dim != nullptr) {
      if (!dim->is_number_integer() || dim->get<int64_t>() < -2 || dim->get<int64_t>() > 1) {
        return Invalid(absl::StrCat(data_path, ".dim"), "-2, -1, 0 or 1 (a 2-D weight's dim)", dim);
      }
      out->dim = dim->get<int64_t>();
    }
    out_data["dim"] = out->dim;
  } else {  // PerGroup
    QS_RETURN_IF_ERROR(only({"group_size"}));
    const OJson* g = Find(*data, "group_size");
    if (g == nullptr || !g->is_number_integer() || g->get<int64_t>() <= 0) {
      return Invalid(absl::StrCat(data_path, ".group_size"), "a positive integer", g);
    }
    out->kind = TorchAoGranularity::Kind::kPerGroup;
    out->group_size = g->get<int64_t>();
    out_data["group_size"] = out->group_size;
  }
  *json_out = OJson{{"_type", name}, {"_version", 1}, {"_data", out_data}};
  return absl::OkStatus();
}

OJson PerRowJson() { return OJson{{"_type", "PerRow"}, {"_version", 1}, {"_data", {{"dim", -1}}}}; }

absl::Status ParseInt4(const Fields& f, TorchAoSchemeConfig* c, OJson* data_out) {
  QS_RETURN_IF_ERROR(
      CheckKnownFields(f, {"group_size", "set_inductor_config", "int4_packing_format",
                           "int4_choose_qparams_algorithm", "int4_tile_packed_ntile", "version"}));
  c->scheme = TorchAoScheme::kInt4WeightOnly;
  OJson& d = *data_out;
  c->group_size = 128;
  if (const OJson* g = Find(f.data, "group_size"); g != nullptr) {
    if (!g->is_number_integer() || g->get<int64_t>() <= 0) {
      return Invalid(FieldPath(f, "group_size"), "a positive integer (e.g. 32, 64, 128, 256)", g);
    }
    c->group_size = g->get<int64_t>();
  }
  d["group_size"] = c->group_size;
  bool flag = false;
  QS_RETURN_IF_ERROR(BoolField(f, "set_inductor_config", true, &flag, &d["set_inductor_config"]));
  std::string packing;
  QS_RETURN_IF_ERROR(EnumField(f, "int4_packing_format", "Int4PackingFormat",
                               {{"PLAIN", "plain"},
                                {"PRESHUFFLED", "preshuffled"},
                                {"PLAIN_INT32", "plain_int32"},
                                {"TILE_PACKED_TO_4D", "tile_packed_to_4d"}},
                               /*str_enum=*/true, "PLAIN", &packing, &d["int4_packing_format"]));
  if (packing != "PLAIN") {
    return Invalid(FieldPath(f, "int4_packing_format"),
                   "\"plain\" (Int4PackingFormat.PLAIN, the Int4Tensor layout): quantserve does "
                   "not implement \"preshuffled\", \"plain_int32\" or \"tile_packed_to_4d\"",
                   Find(f.data, "int4_packing_format"));
  }
  std::string algorithm;
  QS_RETURN_IF_ERROR(EnumField(f, "int4_choose_qparams_algorithm", "Int4ChooseQParamsAlgorithm",
                               {{"TINYGEMM", "tinygemm"}, {"HQQ", "hqq"}}, /*str_enum=*/true,
                               "TINYGEMM", &algorithm, &d["int4_choose_qparams_algorithm"]));
  if (algorithm != "TINYGEMM") {
    // torchao asserts HQQ is only supported with tile_packed_to_4d.
    return Invalid(FieldPath(f, "int4_choose_qparams_algorithm"),
                   "\"tinygemm\" (torchao supports \"hqq\" only with int4_packing_format "
                   "\"tile_packed_to_4d\")",
                   Find(f.data, "int4_choose_qparams_algorithm"));
  }
  int64_t ntile = 8;
  if (const OJson* n = Find(f.data, "int4_tile_packed_ntile"); n != nullptr) {
    if (!n->is_number_integer() || (n->get<int64_t>() != 8 && n->get<int64_t>() != 16)) {
      return Invalid(FieldPath(f, "int4_tile_packed_ntile"), "8 or 16", n);
    }
    ntile = n->get<int64_t>();
  }
  d["int4_tile_packed_ntile"] = ntile;
  return absl::OkStatus();
}

absl::Status ParseInt8WeightOnly(const Fields& f, TorchAoSchemeConfig* c, OJson* data_out) {
  QS_RETURN_IF_ERROR(
      CheckKnownFields(f, {"group_size", "granularity", "set_inductor_config", "version"}));
  c->scheme = TorchAoScheme::kInt8WeightOnly;
  OJson& d = *data_out;
  const OJson* group = Find(f.data, "group_size");
  const OJson* gran = Find(f.data, "granularity");
  c->weight_granularity = TorchAoGranularity{};
  OJson gran_json = PerRowJson();
  if (f.legacy && group != nullptr && !group->is_null()) {
    // int8_weight_only(group_size=g) in the 4.x era meant per-group scales.
    if (!group->is_number_integer() || group->get<int64_t>() <= 0) {
      return Invalid(FieldPath(f, "group_size"), "a positive integer or null", group);
    }
    if (gran != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quantization_config.", f.path,
          " sets both group_size and granularity; give one (group_size g means PerGroup(g))"));
    }
    c->weight_granularity.kind = TorchAoGranularity::Kind::kPerGroup;
    c->weight_granularity.group_size = group->get<int64_t>();
    gran_json = OJson{{"_type", "PerGroup"},
                      {"_version", 1},
                      {"_data", {{"group_size", c->weight_granularity.group_size}}}};
  } else if (group != nullptr && !group->is_null()) {
    return Invalid(FieldPath(f, "group_size"),
                   "null: Int8WeightOnlyConfig version 2 takes granularity "
                   "{\"_type\": \"PerGroup\", \"_version\": 1, \"_data\": {\"group_size\": N}} "
                   "instead",
                   group);
  } else if (gran != nullptr) {
    QS_RETURN_IF_ERROR(ParseGranularity(*gran, FieldPath(f, "granularity"),
                                        {"PerTensor", "PerRow", "PerGroup"}, &c->weight_granularity,
                                        &gran_json));
  }
  d["group_size"] = nullptr;
  d["granularity"] = gran_json;
  bool flag = false;
  QS_RETURN_IF_ERROR(BoolField(f, "set_inductor_config", true, &flag, &d["set_inductor_config"]));
  return absl::OkStatus();
}

absl::Status ParseInt8Dynamic(const Fields& f, TorchAoSchemeConfig* c, OJson* data_out) {
  QS_RETURN_IF_ERROR(CheckKnownFields(f, {"act_mapping_type", "weight_only_decode", "granularity",
                                          "set_inductor_config", "version", "reduce_range"}));
  c->scheme = TorchAoScheme::kInt8DynamicActivationInt8Weight;
  OJson& d = *data_out;
  std::string mapping;
  QS_RETURN_IF_ERROR(EnumField(f, "act_mapping_type", "MappingType",
                               {{"SYMMETRIC", ""}, {"ASYMMETRIC", ""}}, /*str_enum=*/false,
                               "SYMMETRIC", &mapping, &d["act_mapping_type"]));
  c->act_symmetric = mapping == "SYMMETRIC";
  bool flag = false;
  QS_RETURN_IF_ERROR(BoolField(f, "weight_only_decode", false, &flag, &d["weight_only_decode"]));
  // granularity: one for both, [activation, weight], or null (PerRow for both).
  c->act_granularity = TorchAoGranularity{};
  c->weight_granularity = TorchAoGranularity{};
  const std::string gpath = FieldPath(f, "granularity");
  const OJson* gran = Find(f.data, "granularity");
  const std::vector<std::string> kinds = {"PerTensor", "PerRow"};
  if (gran == nullptr) {
    d["granularity"] = PerRowJson();
  } else if (gran->is_null()) {
    d["granularity"] = nullptr;
  } else if (gran->is_array()) {
    if (gran->size() != 2) {
      return Invalid(gpath, "one granularity or a list of exactly 2 ([activation, weight])", gran);
    }
    OJson a, w;
    QS_RETURN_IF_ERROR(ParseGranularity((*gran)[0], gpath + "[0]", kinds, &c->act_granularity, &a));
    QS_RETURN_IF_ERROR(
        ParseGranularity((*gran)[1], gpath + "[1]", kinds, &c->weight_granularity, &w));
    d["granularity"] = OJson::array({a, w});
  } else {
    OJson g;
    QS_RETURN_IF_ERROR(ParseGranularity(*gran, gpath, kinds, &c->act_granularity, &g));
    c->weight_granularity = c->act_granularity;
    d["granularity"] = g;
  }
  // torchao: activations are per token (PerRow(dim=-1)); weights one scale per output row.
  if (c->act_granularity.kind == TorchAoGranularity::Kind::kPerRow &&
      c->act_granularity.dim != -1) {
    return Invalid(gpath, "PerRow with dim -1 for activations (per-token quantization)", gran);
  }
  if (c->weight_granularity.kind == TorchAoGranularity::Kind::kPerRow &&
      c->weight_granularity.dim != -1 && c->weight_granularity.dim != 1) {
    return Invalid(gpath, "PerRow with dim -1 (or 1) for the weight (one scale per output row)",
                   gran);
  }
  QS_RETURN_IF_ERROR(BoolField(f, "set_inductor_config", true, &flag, &d["set_inductor_config"]));
  QS_RETURN_IF_ERROR(BoolField(f, "reduce_range", false, &c->reduce_range, &d["reduce_range"],
                               /*nullable=*/true));
  return absl::OkStatus();
}

// A leaf config from its class name and fields; fills c->json with config_to_dict's form.
absl::Status ParseLeaf(const std::string& type, const Fields& f, TorchAoSchemeConfig* c) {
  OJson data = OJson::object();
  if (type == kInt4) {
    QS_RETURN_IF_ERROR(ParseInt4(f, c, &data));
  } else if (type == kInt8Wo) {
    QS_RETURN_IF_ERROR(ParseInt8WeightOnly(f, c, &data));
  } else {
    QS_RETURN_IF_ERROR(ParseInt8Dynamic(f, c, &data));
  }
  c->json = OJson{{"_type", type}, {"_version", kIntConfigVersion}, {"_data", data}};
  return absl::OkStatus();
}

// {"_type", "_version", "_data"} of one AOBaseConfig at `path`; FqnToConfig only when
// `fqn` is non-null (it does not nest).
absl::Status ParseAoConfig(const OJson& v, const std::string& path, TorchAoSchemeConfig* leaf,
                           TorchAoConfig* fqn) {
  std::vector<std::string> supported = SupportedTypes();
  if (fqn == nullptr) supported.resize(3);
  const std::string what = absl::StrCat(
      "a torchao config {\"_type\": ..., \"_version\": ..., \"_data\": {...}} with _type one of ",
      QuotedList(supported));
  if (!v.is_object()) return Invalid(path, what, &v);
  const OJson* type = Find(v, "_type");
  const OJson* data = Find(v, "_data");
  if (type == nullptr || data == nullptr) return Invalid(path, what, &v);
  if (!type->is_string() ||
      std::find(supported.begin(), supported.end(), type->get<std::string>()) == supported.end()) {
    return Invalid(absl::StrCat(path, "._type"),
                   absl::StrCat("one of ", QuotedList(supported),
                                " (the torchao configs quantserve implements)"),
                   type);
  }
  const std::string name = type->get<std::string>();
  const std::string data_path = absl::StrCat(path, "._data");
  if (!data->is_object())
    return Invalid(data_path, absl::StrCat("an object of ", name, " fields"), data);
  int64_t version = 1;  // config_from_dict's default when _version is absent
  if (const OJson* ver = Find(v, "_version"); ver != nullptr) {
    if (!ver->is_number_integer())
      return Invalid(absl::StrCat(path, "._version"), "an integer", ver);
    version = ver->get<int64_t>();
  }
  if (const OJson* ver = Find(*data, "version"); ver != nullptr) {
    if (!ver->is_number_integer()) return Invalid(data_path + ".version", "an integer", ver);
    version = ver->get<int64_t>();
  }
  if (name == kFqn || name == kModuleFqn) {
    fqn->is_fqn_to_config = true;
    fqn->fqn_version = version;
    for (auto it = data->begin(); it != data->end(); ++it) {
      if (it.key() != "fqn_to_config" && it.key() != "module_fqn_to_config" &&
          it.key() != "version") {
        return absl::InvalidArgumentError(absl::StrCat(
            "quantization_config.", data_path, " has unknown field \"", it.key(),
            "\" for FqnToConfig (its fields: \"fqn_to_config\", \"module_fqn_to_config\")"));
      }
    }
    std::vector<std::vector<TorchAoConfig::FqnEntry>> maps;
    std::vector<std::string> dumps;
    for (const char* field : {"fqn_to_config", "module_fqn_to_config"}) {
      const OJson* m = Find(*data, field);
      const std::string mpath = absl::StrCat(data_path, ".", field);
      std::vector<TorchAoConfig::FqnEntry> entries;
      OJson dump = OJson::object();
      if (m != nullptr && !m->is_object()) {
        return Invalid(mpath,
                       "an object mapping module names, \"re:<regex>\" or \"_default\" "
                       "to a torchao config or null",
                       m);
      }
      if (m != nullptr) {
        for (auto e = m->begin(); e != m->end(); ++e) {
          TorchAoConfig::FqnEntry entry;
          entry.key = e.key();
          const std::string epath = absl::StrCat(mpath, "[\"", e.key(), "\"]");
          if (absl::StartsWith(entry.key, "re:")) {
            try {
              entry.regex =
                  std::make_shared<const std::regex>(entry.key.substr(3), std::regex::ECMAScript);
            } catch (const std::regex_error&) {
              return absl::InvalidArgumentError(
                  absl::StrCat("quantization_config.", mpath, " key \"", entry.key,
                               "\" must be \"re:\" followed by a valid regular expression"));
            }
          }
          if (!e.value().is_null()) {
            TorchAoSchemeConfig c;
            QS_RETURN_IF_ERROR(ParseAoConfig(e.value(), epath, &c, nullptr));
            dump[entry.key] = c.json;
            entry.config = std::move(c);
          } else {
            dump[entry.key] = nullptr;
          }
          entries.push_back(std::move(entry));
        }
      }
      maps.push_back(std::move(entries));
      dumps.push_back(dump.dump());
    }
    if (!maps[0].empty() && !maps[1].empty() && dumps[0] != dumps[1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quantization_config.", data_path,
          ": fqn_to_config and module_fqn_to_config are both given and differ; give one"));
    }
    fqn->fqn_entries = std::move(maps[0].empty() ? maps[1] : maps[0]);
    return absl::OkStatus();
  }
  if (version != kIntConfigVersion) {
    return Invalid(
        absl::StrCat(path, "._version"),
        absl::StrCat(kIntConfigVersion, " (torchao 0.18 removed version 1 of ", name, ")"),
        Find(v, "_version"));
  }
  return ParseLeaf(name, Fields{*data, data_path, name, /*legacy=*/false}, leaf);
}

OJson EntriesJson(const std::vector<TorchAoConfig::FqnEntry>& entries) {
  OJson m = OJson::object();
  for (const auto& e : entries) m[e.key] = e.config ? e.config->json : OJson(nullptr);
  return m;
}

}  // namespace

std::pair<int64_t, int64_t> TorchAoGranularity::BlockSize(int64_t rows, int64_t cols) const {
  switch (kind) {
    case Kind::kPerTensor:
      return {rows, cols};
    case Kind::kPerGroup:
      return {1, group_size};
    case Kind::kPerRow:
      break;
  }
  // block_size[dim] = shape[dim], 1 elsewhere.
  return (dim == 0 || dim == -2) ? std::make_pair(rows, int64_t{1})
                                 : std::make_pair(int64_t{1}, cols);
}

const char* TorchAoSchemeConfig::type_name() const {
  switch (scheme) {
    case TorchAoScheme::kInt4WeightOnly:
      return kInt4;
    case TorchAoScheme::kInt8WeightOnly:
      return kInt8Wo;
    case TorchAoScheme::kInt8DynamicActivationInt8Weight:
      return kInt8Dyn;
  }
  return "";
}

absl::StatusOr<TorchAoConfig> TorchAoConfig::Parse(const std::string& json) {
  QS_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::Parse(json));
  // Ordered: FqnToConfig applies the first matching regex in JSON order.
  const OJson root = OJson::parse(json, nullptr, /*allow_exceptions=*/false);
  TorchAoConfig c;
  QS_RETURN_IF_ERROR(reader.StringList("modules_to_not_convert", &c.modules_to_not_convert));
  QS_RETURN_IF_ERROR(
      reader.Bool("include_input_output_embeddings", &c.include_input_output_embeddings));
  QS_RETURN_IF_ERROR(reader.Bool("untie_embedding_weights", &c.untie_embedding_weights));
  if (c.include_input_output_embeddings) {
    return absl::UnimplementedError(
        "quantization_config.include_input_output_embeddings=true (quantizing nn.Embedding and "
        "the output embedding with torchao) is not supported by quantserve; set it to false");
  }

  const OJson* qt = Find(root, "quant_type");
  const std::string qt_what =
      "a torchao config {\"default\": {\"_type\": ..., \"_version\": ..., \"_data\": {...}}} "
      "(or a legacy string \"int4_weight_only\", \"int8_weight_only\", "
      "\"int8_dynamic_activation_int8_weight\")";
  if (qt == nullptr || qt->is_null()) return Invalid("quant_type", qt_what, qt);
  if (qt->is_string()) {
    const std::string s = qt->get<std::string>();
    std::string type;
    std::vector<std::string> names;
    for (const auto& [legacy, cls] : LegacyTypes()) {
      names.push_back(legacy);
      if (legacy == s) type = cls;
    }
    if (type.empty()) {
      return Invalid("quant_type",
                     absl::StrCat("one of ", QuotedList(names),
                                  " when a string (\"autoquant\" is not supported)"),
                     qt);
    }
    c.legacy_quant_type = s;
    if (const OJson* k = Find(root, "quant_type_kwargs"); k != nullptr && k->is_object()) {
      if (const OJson* ver = Find(*k, "version"); ver != nullptr && *ver != kIntConfigVersion) {
        return Invalid("quant_type_kwargs.version",
                       absl::StrCat(kIntConfigVersion, " (torchao 0.18 removed version 1)"), ver);
      }
    }
    // 4.x: kwargs come from quant_type_kwargs, else from the remaining top-level keys.
    OJson kwargs = OJson::object();
    std::string kwargs_path = "quant_type_kwargs";
    if (const OJson* k = Find(root, "quant_type_kwargs"); k != nullptr && !k->is_null()) {
      if (!k->is_object()) return Invalid("quant_type_kwargs", "an object of keyword args", k);
      kwargs = *k;
    } else {
      static const std::set<std::string> kOwn = {"quant_method",
                                                 "quant_type",
                                                 "quant_type_kwargs",
                                                 "modules_to_not_convert",
                                                 "include_input_output_embeddings",
                                                 "untie_embedding_weights"};
      for (auto it = root.begin(); it != root.end(); ++it) {
        if (kOwn.count(it.key()) == 0) kwargs[it.key()] = it.value();
      }
      kwargs_path = "quant_type_kwargs (or top-level kwargs)";
    }
    QS_RETURN_IF_ERROR(ParseLeaf(type, Fields{kwargs, kwargs_path, s, /*legacy=*/true}, &c.single));
    return c;
  }
  if (!qt->is_object() || qt->size() != 1 || !qt->contains("default")) {
    return Invalid("quant_type",
                   absl::StrCat(qt_what, "; the object must have exactly one key \"default\""), qt);
  }
  QS_RETURN_IF_ERROR(ParseAoConfig(qt->at("default"), "quant_type.default", &c.single, &c));
  return c;
}

std::string TorchAoConfig::ToJson() const {
  OJson quant_type;
  if (is_fqn_to_config) {
    const OJson m = EntriesJson(fqn_entries);
    quant_type = OJson{{"_type", kFqn},
                       {"_version", fqn_version},
                       {"_data", {{"fqn_to_config", m}, {"module_fqn_to_config", m}}}};
  } else {
    quant_type = single.json;
  }
  OJson out;
  out["quant_method"] = "torchao";
  out["quant_type"] = OJson{{"default", quant_type}};
  out["modules_to_not_convert"] =
      modules_to_not_convert ? OJson(*modules_to_not_convert) : OJson(nullptr);
  out["include_input_output_embeddings"] = include_input_output_embeddings;
  out["untie_embedding_weights"] = untie_embedding_weights;
  return out.dump();
}

const TorchAoSchemeConfig* TorchAoConfig::ConfigFor(const std::string& module_name) const {
  if (!is_fqn_to_config) return &single;
  const std::string param = module_name + ".weight";
  auto result = [](const FqnEntry& e) { return e.config ? &*e.config : nullptr; };
  for (const auto& e : fqn_entries) {
    if (e.key == param) return result(e);
  }
  for (const auto& e : fqn_entries) {
    if (e.key == module_name) return result(e);
  }
  for (const auto& e : fqn_entries) {
    if (e.regex && (std::regex_match(param, *e.regex) || std::regex_match(module_name, *e.regex))) {
      return result(e);
    }
  }
  for (const auto& e : fqn_entries) {
    if (e.key == "_default") return result(e);
  }
  return nullptr;
}

bool TorchAoConfig::MatchesFqn(const std::string& fqn) const {
  if (!is_fqn_to_config) return false;
  for (const auto& e : fqn_entries) {
    if (e.key == fqn || (e.regex && std::regex_match(fqn, *e.regex))) return true;
  }
  return false;
}

bool TorchAoConfig::is_int8_class() const {
  return !is_fqn_to_config && single.scheme != TorchAoScheme::kInt4WeightOnly;
}

}  // namespace quantserve::quant

#include "quant/methods/torchao/torchao_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace quantserve::quant {
namespace {

using OJson = nlohmann::ordered_json;

// {"quant_method": "torchao", "quant_type": {"default": <inner>}} plus `extra` members.
std::string Config(const std::string& inner, const std::string& extra = "") {
  return R"({"quant_method": "torchao", "quant_type": {"default": )" + inner + "}" +
         (extra.empty() ? "" : ", " + extra) + "}";
}

TorchAoConfig MustParse(const std::string& json) {
  auto c = TorchAoConfig::Parse(json);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : TorchAoConfig{};
}

// INVALID_ARGUMENT whose message contains every one of `parts`.
void ExpectInvalid(const std::string& json, const std::vector<std::string>& parts) {
  auto c = TorchAoConfig::Parse(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  for (const auto& p : parts) {
    EXPECT_NE(c.status().message().find(p), absl::string_view::npos)
        << "'" << p << "' not in: " << c.status().message();
  }
}

// Normalized JSON in transformers' to_dict() key order (json.dumps of TorchAoConfig.to_dict()
// with transformers 5.23.0 + torchao 0.18.0).
void ExpectNormalized(const std::string& json, const std::string& python_to_dict) {
  EXPECT_EQ(MustParse(json).ToJson(), OJson::parse(python_to_dict).dump());
}

constexpr char kInt8Wo[] = R"({"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {}})";

TEST(TorchAoConfigTest, DefaultsFilledLikeTorchaoConfigToDict) {
  ExpectNormalized(
      Config(R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {}})"),
      R"({"quant_method": "torchao", "quant_type": {"default": {"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"group_size": 128, "set_inductor_config": true, "int4_packing_format": {"_type": "Int4PackingFormat", "_data": "PLAIN"}, "int4_choose_qparams_algorithm": {"_type": "Int4ChooseQParamsAlgorithm", "_data": "TINYGEMM"}, "int4_tile_packed_ntile": 8}}}, "modules_to_not_convert": null, "include_input_output_embeddings": false, "untie_embedding_weights": false})");
  ExpectNormalized(
      Config(kInt8Wo),
      R"({"quant_method": "torchao", "quant_type": {"default": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"group_size": null, "granularity": {"_type": "PerRow", "_version": 1, "_data": {"dim": -1}}, "set_inductor_config": true}}}, "modules_to_not_convert": null, "include_input_output_embeddings": false, "untie_embedding_weights": false})");
  const TorchAoConfig c = MustParse(Config(kInt8Wo));
  EXPECT_FALSE(c.is_fqn_to_config);
  EXPECT_EQ(c.single.scheme, TorchAoScheme::kInt8WeightOnly);
  EXPECT_EQ(c.single.weight_granularity.kind, TorchAoGranularity::Kind::kPerRow);
  EXPECT_EQ(c.single.weight_granularity.BlockSize(768, 256),
            std::make_pair(int64_t{1}, int64_t{256}));
  EXPECT_TRUE(c.is_int8_class());
}

TEST(TorchAoConfigTest, GranularityListAndNullableReduceRangeRoundTrip) {
  ExpectNormalized(
      Config(
          R"({"_type": "Int8DynamicActivationInt8WeightConfig", "_version": 2, "_data": {"granularity": [{"_type": "PerRow", "_data": {}}, {"_type": "PerTensor", "_version": 1, "_data": {}}], "reduce_range": null}})",
          R"("modules_to_not_convert": ["lm_head"])"),
      R"({"quant_method": "torchao", "quant_type": {"default": {"_type": "Int8DynamicActivationInt8WeightConfig", "_version": 2, "_data": {"act_mapping_type": {"_type": "MappingType", "_data": "SYMMETRIC"}, "weight_only_decode": false, "granularity": [{"_type": "PerRow", "_version": 1, "_data": {"dim": -1}}, {"_type": "PerTensor", "_version": 1, "_data": {}}], "set_inductor_config": true, "reduce_range": null}}}, "modules_to_not_convert": ["lm_head"], "include_input_output_embeddings": false, "untie_embedding_weights": false})");
  const TorchAoConfig c = MustParse(Config(
      R"({"_type": "Int8DynamicActivationInt8WeightConfig", "_version": 2, "_data": {"granularity": [{"_type": "PerRow", "_data": {}}, {"_type": "PerTensor", "_data": {}}], "act_mapping_type": {"_type": "MappingType", "_data": "ASYMMETRIC"}, "reduce_range": true}})"));
  EXPECT_EQ(c.single.act_granularity.kind, TorchAoGranularity::Kind::kPerRow);
  EXPECT_EQ(c.single.weight_granularity.kind, TorchAoGranularity::Kind::kPerTensor);
  EXPECT_FALSE(c.single.act_symmetric);
  EXPECT_TRUE(c.single.reduce_range);
}

TEST(TorchAoConfigTest, QuantTypeIsRequired) {
  ExpectInvalid(R"({"quant_method": "torchao"})",
                {"quantization_config.quant_type must be", "(got nothing)"});
  ExpectInvalid(R"({"quant_method": "torchao", "quant_type": null})", {"quant_type must be"});
  ExpectInvalid(R"({"quant_method": "torchao", "quant_type": 4})", {"quant_type must be"});
}

TEST(TorchAoConfigTest, QuantTypeHasExactlyOneKeyDefault) {
  ExpectInvalid(R"({"quant_method": "torchao", "quant_type": {"fp": {}}})",
                {"quant_type must be", "exactly one key \"default\""});
  ExpectInvalid(
      R"({"quant_type": {"default": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {}}, "other": {}}})",
      {"exactly one key \"default\""});
}

TEST(TorchAoConfigTest, ConfigNeedsTypeAndData) {
  ExpectInvalid(Config(R"({"_type": "Int8WeightOnlyConfig", "_version": 2})"),
                {"quantization_config.quant_type.default must be", "\"_data\""});
  ExpectInvalid(Config(R"({"_version": 2, "_data": {}})"), {"quant_type.default must be"});
  ExpectInvalid(Config(R"({"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": 3})"),
                {"quant_type.default._data must be an object"});
}

TEST(TorchAoConfigTest, UnsupportedTypeListsTheSupportedOnes) {
  ExpectInvalid(
      Config(R"({"_type": "Float8WeightOnlyConfig", "_version": 2, "_data": {}})"),
      {"quantization_config.quant_type.default._type must be one of", "\"Int4WeightOnlyConfig\"",
       "\"Int8WeightOnlyConfig\"", "\"Int8DynamicActivationInt8WeightConfig\"", "\"FqnToConfig\"",
       "(got \"Float8WeightOnlyConfig\")"});
}

TEST(TorchAoConfigTest, IntConfigsNeedVersion2) {
  // config_from_dict defaults a missing _version to 1, which torchao 0.18 removed.
  ExpectInvalid(Config(R"({"_type": "Int8WeightOnlyConfig", "_data": {}})"),
                {"quant_type.default._version must be 2", "(got nothing)"});
  ExpectInvalid(Config(R"({"_type": "Int4WeightOnlyConfig", "_version": 1, "_data": {}})"),
                {"_version must be 2", "(got 1)"});
  ExpectInvalid(Config(R"({"_type": "Int8WeightOnlyConfig", "_version": "2", "_data": {}})"),
                {"_version must be an integer"});
}

TEST(TorchAoConfigTest, UnknownFieldIsRefusedLikeTheConstructor) {
  ExpectInvalid(Config(R"({"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"bits": 8}})"),
                {"quant_type.default._data has unknown field \"bits\" for Int8WeightOnlyConfig",
                 "\"granularity\""});
}

TEST(TorchAoConfigTest, Int4GroupSizeMustBePositiveInteger) {
  for (const char* bad : {"0", "-32", "64.0", "\"128\"", "true"}) {
    ExpectInvalid(
        Config(std::string(
                   R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"group_size": )") +
               bad + "}}"),
        {"quant_type.default._data.group_size must be a positive integer"});
  }
  EXPECT_EQ(
      MustParse(
          Config(
              R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"group_size": 32}})"))
          .single.group_size,
      32);
}

TEST(TorchAoConfigTest, Int4OnlyPlainPacking) {
  ExpectInvalid(
      Config(
          R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"int4_packing_format": {"_type": "Int4PackingFormat", "_data": "PRESHUFFLED"}}})"),
      {"int4_packing_format must be \"plain\"", "\"preshuffled\"", "\"tile_packed_to_4d\""});
  ExpectInvalid(
      Config(
          R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"int4_packing_format": "tile_packed_to_4d"}})"),
      {"int4_packing_format must be \"plain\""});
  // The enum object carries the member NAME; the value "plain" there is an AttributeError.
  ExpectInvalid(
      Config(
          R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"int4_packing_format": {"_type": "Int4PackingFormat", "_data": "plain"}}})"),
      {"int4_packing_format must be {\"_type\": \"Int4PackingFormat\"", "\"PLAIN\""});
  ExpectInvalid(
      Config(
          R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"int4_packing_format": {"_type": "MappingType", "_data": "PLAIN"}}})"),
      {"int4_packing_format must be"});
  // A plain string (str enum) is kept as a string, like config_to_dict does.
  const TorchAoConfig c = MustParse(Config(
      R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"int4_packing_format": "plain"}})"));
  EXPECT_EQ(OJson::parse(c.ToJson())["quant_type"]["default"]["_data"]["int4_packing_format"],
            "plain");
}

TEST(TorchAoConfigTest, Int4HqqAlgorithmNeedsTilePacking) {
  ExpectInvalid(
      Config(
          R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"int4_choose_qparams_algorithm": "hqq"}})"),
      {"int4_choose_qparams_algorithm must be \"tinygemm\"", "tile_packed_to_4d"});
}

TEST(TorchAoConfigTest, Int4TileNtileIs8Or16) {
  ExpectInvalid(
      Config(
          R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"int4_tile_packed_ntile": 12}})"),
      {"int4_tile_packed_ntile must be 8 or 16", "(got 12)"});
  MustParse(Config(
      R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"int4_tile_packed_ntile": 16}})"));
}

TEST(TorchAoConfigTest, Int8WeightOnlyGroupSizeMustBeNull) {
  ExpectInvalid(
      Config(R"({"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"group_size": 64}})"),
      {"group_size must be null", "PerGroup", "(got 64)"});
  const TorchAoConfig c = MustParse(Config(
      R"({"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"granularity": {"_type": "PerGroup", "_version": 1, "_data": {"group_size": 64}}}})"));
  EXPECT_EQ(c.single.weight_granularity.kind, TorchAoGranularity::Kind::kPerGroup);
  EXPECT_EQ(c.single.weight_granularity.BlockSize(768, 256),
            std::make_pair(int64_t{1}, int64_t{64}));
}

TEST(TorchAoConfigTest, GranularityObjectsAreChecked) {
  auto int8wo = [](const std::string& gran) {
    return Config(R"({"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"granularity": )" +
                  gran + "}}");
  };
  ExpectInvalid(int8wo(R"({"_type": "PerToken", "_data": {}})"),
                {"granularity._type must be one of \"PerTensor\", \"PerRow\", \"PerGroup\""});
  ExpectInvalid(int8wo(R"({"_type": "PerRow"})"), {"granularity must be a granularity"});
  ExpectInvalid(int8wo(R"(null)"), {"granularity must be a granularity"});
  ExpectInvalid(int8wo(R"({"_type": "PerRow", "_version": 2, "_data": {}})"),
                {"granularity._version must be 1"});
  ExpectInvalid(int8wo(R"({"_type": "PerGroup", "_data": {}})"),
                {"granularity._data.group_size must be a positive integer"});
  ExpectInvalid(int8wo(R"({"_type": "PerRow", "_data": {"dim": 5}})"),
                {"granularity._data.dim must be"});
  ExpectInvalid(int8wo(R"({"_type": "PerTensor", "_data": {"dim": 1}})"),
                {"unknown field \"dim\" for PerTensor"});
  const TorchAoConfig c = MustParse(int8wo(R"({"_type": "PerTensor", "_data": {}})"));
  EXPECT_EQ(c.single.weight_granularity.BlockSize(768, 256),
            std::make_pair(int64_t{768}, int64_t{256}));
}

TEST(TorchAoConfigTest, Int8DynamicGranularityRules) {
  auto dyn = [](const std::string& data) {
    return Config(R"({"_type": "Int8DynamicActivationInt8WeightConfig", "_version": 2, "_data": )" +
                  data + "}");
  };
  ExpectInvalid(dyn(R"({"granularity": {"_type": "PerGroup", "_data": {"group_size": 32}}})"),
                {"granularity._type must be one of \"PerTensor\", \"PerRow\""});
  ExpectInvalid(dyn(R"({"granularity": [{"_type": "PerRow", "_data": {}}]})"),
                {"granularity must be one granularity or a list of exactly 2"});
  ExpectInvalid(dyn(R"({"granularity": {"_type": "PerRow", "_data": {"dim": 0}}})"),
                {"PerRow with dim -1 for activations"});
  // null means PerRow for both and is echoed.
  const TorchAoConfig c = MustParse(dyn(R"({"granularity": null})"));
  EXPECT_EQ(c.single.act_granularity.kind, TorchAoGranularity::Kind::kPerRow);
  EXPECT_TRUE(OJson::parse(c.ToJson())["quant_type"]["default"]["_data"]["granularity"].is_null());
}

TEST(TorchAoConfigTest, ActMappingTypeIsAMappingTypeEnum) {
  auto dyn = [](const std::string& m) {
    return Config(
        R"({"_type": "Int8DynamicActivationInt8WeightConfig", "_version": 2, "_data": {"act_mapping_type": )" +
        m + "}}");
  };
  // MappingType is not a str enum: a bare string fails torchao's membership assert.
  ExpectInvalid(dyn(R"("SYMMETRIC")"), {"act_mapping_type must be {\"_type\": \"MappingType\""});
  ExpectInvalid(dyn(R"({"_type": "MappingType", "_data": "SYMMETRIC_NO_CLIPPING_ERR"})"),
                {"act_mapping_type must be", "\"ASYMMETRIC\""});
}

TEST(TorchAoConfigTest, BoolFieldsMustBeBools) {
  ExpectInvalid(
      Config(
          R"({"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"set_inductor_config": 1}})"),
      {"set_inductor_config must be true or false (got 1)"});
  ExpectInvalid(Config(kInt8Wo, R"("untie_embedding_weights": "yes")"),
                {"quantization_config.untie_embedding_weights must be true or false"});
  ExpectInvalid(Config(kInt8Wo, R"("include_input_output_embeddings": 1)"),
                {"include_input_output_embeddings must be true or false"});
}

TEST(TorchAoConfigTest, EmbeddingQuantizationIsUnimplemented) {
  auto c = TorchAoConfig::Parse(Config(kInt8Wo, R"("include_input_output_embeddings": true)"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(c.status().message().find("include_input_output_embeddings"), absl::string_view::npos);
  // untie_embedding_weights alone only matters with embedding quantization: accepted, echoed.
  const TorchAoConfig u = MustParse(Config(kInt8Wo, R"("untie_embedding_weights": true)"));
  EXPECT_TRUE(OJson::parse(u.ToJson())["untie_embedding_weights"].get<bool>());
}

TEST(TorchAoConfigTest, ModulesToNotConvertIsAListOfStrings) {
  ExpectInvalid(Config(kInt8Wo, R"("modules_to_not_convert": "lm_head")"),
                {"quantization_config.modules_to_not_convert must be a list"});
  const TorchAoConfig c =
      MustParse(Config(kInt8Wo, R"("modules_to_not_convert": ["lm_head", "model.layers.0"])"));
  ASSERT_TRUE(c.modules_to_not_convert.has_value());
  EXPECT_EQ(c.modules_to_not_convert->size(), 2u);
}

TEST(TorchAoConfigTest, LegacyStringsAliasTheirAOBaseConfig) {
  const TorchAoConfig c = MustParse(
      R"({"quant_method": "torchao", "quant_type": "int4_weight_only", "quant_type_kwargs": {"group_size": 64}})");
  EXPECT_EQ(c.legacy_quant_type, "int4_weight_only");
  EXPECT_EQ(c.single.scheme, TorchAoScheme::kInt4WeightOnly);
  EXPECT_EQ(c.single.group_size, 64);
  const OJson n = OJson::parse(c.ToJson());
  EXPECT_EQ(n["quant_type"]["default"]["_type"], "Int4WeightOnlyConfig");
  EXPECT_EQ(n["quant_type"]["default"]["_data"]["group_size"], 64);
  EXPECT_FALSE(n.contains("quant_type_kwargs"));

  const TorchAoConfig d = MustParse(
      R"({"quant_method": "torchao", "quant_type": "int8_dynamic_activation_int8_weight"})");
  EXPECT_EQ(d.single.scheme, TorchAoScheme::kInt8DynamicActivationInt8Weight);
  // 4.x also took the kwargs from the top level when quant_type_kwargs was absent.
  const TorchAoConfig t = MustParse(
      R"({"quant_method": "torchao", "quant_type": "int4_weight_only", "group_size": 32})");
  EXPECT_EQ(t.single.group_size, 32);
}

TEST(TorchAoConfigTest, LegacyInt8GroupSizeMeansPerGroup) {
  const TorchAoConfig c = MustParse(
      R"({"quant_method": "torchao", "quant_type": "int8_weight_only", "quant_type_kwargs": {"group_size": 64}})");
  EXPECT_EQ(c.single.weight_granularity.kind, TorchAoGranularity::Kind::kPerGroup);
  EXPECT_EQ(c.single.weight_granularity.group_size, 64);
  EXPECT_EQ(OJson::parse(c.ToJson())["quant_type"]["default"]["_data"]["granularity"]["_type"],
            "PerGroup");
}

TEST(TorchAoConfigTest, LegacyUnknownKwargIsRefused) {
  ExpectInvalid(
      R"({"quant_method": "torchao", "quant_type": "int4_weight_only", "quant_type_kwargs": {"use_hqq": true}})",
      {"quant_type_kwargs has unexpected keyword arg \"use_hqq\" for int4_weight_only",
       "valid kwargs", "\"group_size\""});
  ExpectInvalid(R"({"quant_method": "torchao", "quant_type": "int8_weight_only", "bits": 8})",
                {"unexpected keyword arg \"bits\" for int8_weight_only"});
  ExpectInvalid(
      R"({"quant_method": "torchao", "quant_type": "int8_weight_only", "quant_type_kwargs": [1]})",
      {"quantization_config.quant_type_kwargs must be an object"});
}

TEST(TorchAoConfigTest, LegacyUnsupportedStrings) {
  ExpectInvalid(R"({"quant_method": "torchao", "quant_type": "autoquant"})",
                {"quant_type must be one of \"int4_weight_only\", \"int8_weight_only\", "
                 "\"int8_dynamic_activation_int8_weight\"",
                 "(got \"autoquant\")"});
  ExpectInvalid(R"({"quant_method": "torchao", "quant_type": "int4wo"})", {"(got \"int4wo\")"});
}

constexpr char kFqnConfig[] = R"({
  "_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": {
    "model.layers.0.mlp.up_proj.weight": {"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"group_size": 32}},
    "model.layers.0.mlp.up_proj": null,
    "model.layers.1.mlp.up_proj": null,
    "re:model\\.layers\\.[0-9]+\\.mlp\\..*": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {}},
    "re:.*up_proj": {"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {}},
    "_default": {"_type": "Int8DynamicActivationInt8WeightConfig", "_version": 2, "_data": {}}}}})";

TEST(TorchAoConfigTest, FqnToConfigPrecedenceLikeTransformers) {
  const TorchAoConfig c = MustParse(Config(kFqnConfig));
  ASSERT_TRUE(c.is_fqn_to_config);
  EXPECT_FALSE(c.is_int8_class());  // "fqntoconfig" has no "8weight"
  // Exact parameter name beats the exact module name.
  const TorchAoSchemeConfig* a = c.ConfigFor("model.layers.0.mlp.up_proj");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->scheme, TorchAoScheme::kInt4WeightOnly);
  EXPECT_EQ(a->group_size, 32);
  // Exact module name with null: left in float.
  EXPECT_EQ(c.ConfigFor("model.layers.1.mlp.up_proj"), nullptr);
  // The first regex (in JSON order) that fully matches.
  const TorchAoSchemeConfig* b = c.ConfigFor("model.layers.2.mlp.up_proj");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->scheme, TorchAoScheme::kInt8WeightOnly);
  // fullmatch: "re:.*up_proj" does not match "...up_proj_x"; falls back to _default.
  const TorchAoSchemeConfig* d = c.ConfigFor("model.layers.2.self_attn.up_proj_x");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->scheme, TorchAoScheme::kInt8DynamicActivationInt8Weight);
  // Normalized: FqnToConfig with both maps (the same object in torchao).
  const OJson n = OJson::parse(c.ToJson())["quant_type"]["default"];
  EXPECT_EQ(n["_type"], "FqnToConfig");
  EXPECT_EQ(n["_data"]["fqn_to_config"], n["_data"]["module_fqn_to_config"]);
  EXPECT_TRUE(n["_data"]["fqn_to_config"]["model.layers.1.mlp.up_proj"].is_null());
  EXPECT_EQ(n["_data"]["fqn_to_config"].begin().key(), "model.layers.0.mlp.up_proj.weight");
}

TEST(TorchAoConfigTest, FqnToConfigWithoutDefaultLeavesTheRestFloat) {
  const TorchAoConfig c = MustParse(Config(
      R"({"_type": "ModuleFqnToConfig", "_version": 1, "_data": {"module_fqn_to_config": {"re:.*q_proj": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {}}}}})"));
  EXPECT_NE(c.ConfigFor("model.layers.0.self_attn.q_proj"), nullptr);
  EXPECT_EQ(c.ConfigFor("model.layers.0.self_attn.k_proj"), nullptr);
  ExpectNormalized(
      Config(
          R"({"_type": "ModuleFqnToConfig", "_version": 1, "_data": {"module_fqn_to_config": {"re:.*q_proj": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {}}, "model.layers.0.mlp.up_proj": null}}})"),
      R"({"quant_method": "torchao", "quant_type": {"default": {"_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": {"re:.*q_proj": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"group_size": null, "granularity": {"_type": "PerRow", "_version": 1, "_data": {"dim": -1}}, "set_inductor_config": true}}, "model.layers.0.mlp.up_proj": null}, "module_fqn_to_config": {"re:.*q_proj": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"group_size": null, "granularity": {"_type": "PerRow", "_version": 1, "_data": {"dim": -1}}, "set_inductor_config": true}}, "model.layers.0.mlp.up_proj": null}}}}, "modules_to_not_convert": null, "include_input_output_embeddings": false, "untie_embedding_weights": false})");
}

TEST(TorchAoConfigTest, FqnToConfigErrors) {
  ExpectInvalid(
      Config(
          R"({"_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": {"a": null}, "module_fqn_to_config": {"b": null}}})"),
      {"fqn_to_config and module_fqn_to_config are both given and differ"});
  ExpectInvalid(
      Config(
          R"({"_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": {"re:model.(": null}}})"),
      {"key \"re:model.(\" must be \"re:\" followed by a valid regular expression"});
  ExpectInvalid(
      Config(
          R"({"_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": {"_default": {"_type": "FqnToConfig", "_version": 1, "_data": {}}}}})"),
      {"fqn_to_config[\"_default\"]._type must be one of"});
  ExpectInvalid(
      Config(
          R"({"_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": {"x": "int8"}}})"),
      {"fqn_to_config[\"x\"] must be a torchao config"});
  ExpectInvalid(
      Config(R"({"_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": []}})"),
      {"fqn_to_config must be an object"});
  ExpectInvalid(Config(R"({"_type": "FqnToConfig", "_version": 1, "_data": {"filter": 1}})"),
                {"unknown field \"filter\" for FqnToConfig"});
}

}  // namespace
}  // namespace quantserve::quant

#include "quant/methods/hqq/hqq_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace quantserve::quant {
namespace {

using Json = nlohmann::json;

HqqConfig ParseOk(const std::string& text) {
  auto c = HqqConfig::Parse(text);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : HqqConfig();
}

// The code and the exact message.
void ExpectError(const std::string& text, absl::StatusCode code, const std::string& message) {
  auto c = HqqConfig::Parse(text);
  ASSERT_FALSE(c.ok()) << text;
  EXPECT_EQ(c.status().code(), code) << c.status();
  EXPECT_EQ(c.status().message(), message);
}

void ExpectInvalid(const std::string& text, const std::string& message) {
  ExpectError(text, absl::StatusCode::kInvalidArgument, message);
}

constexpr char kBits[] = "one of 8, 6, 5, 4, 3, 2, 1.58, 1 (hqq's Quantizer.SUPPORTED_BITS)";
constexpr char kGroup[] = "null or a positive multiple of 8 (hqq asserts group_size % 8 == 0)";

// ---- defaults and normalized JSON (expected values are transformers 5.23's to_dict()) ----

TEST(HqqConfigTest, DefaultsAreHqqConfigs) {
  HqqConfig c = ParseOk(R"({"quant_method": "hqq"})");
  ASSERT_TRUE(c.quant_config.has_value());
  const HqqWeightQuantParams& p = *c.quant_config;
  EXPECT_EQ(p.nbits, 4);
  EXPECT_FALSE(p.nbits_is_float);
  EXPECT_EQ(p.group_size, 64);
  EXPECT_EQ(p.axis, 1);  // HqqConfig: axis=None -> 1
  EXPECT_TRUE(p.optimize);
  EXPECT_TRUE(p.round_zero);  // BaseQuantizeConfig: nbits == 4
  EXPECT_FALSE(p.view_as_float);
  EXPECT_EQ(p.max_code(), 15);
  EXPECT_TRUE(c.tag_configs.empty());
  EXPECT_EQ(c.skip_modules, std::vector<std::string>{"lm_head"});
  EXPECT_EQ(Json::parse(c.ToJson()), Json::parse(R"({"quant_config": {"weight_quant_params":
      {"nbits": 4, "channel_wise": true, "group_size": 64, "optimize": true, "round_zero": true,
       "axis": 1, "view_as_float": false}, "scale_quant_params": null,
       "zero_quant_params": null, "offload_meta": false}, "quant_method": "hqq",
       "skip_modules": ["lm_head"]})"));
}

TEST(HqqConfigTest, FloatNbitsNullGroupAxis0ViewAsFloat) {
  HqqConfig c = ParseOk(
      R"({"quant_method": "hqq", "nbits": 4.0, "group_size": null, "axis": 0,
          "view_as_float": true})");
  const HqqWeightQuantParams& p = *c.quant_config;
  EXPECT_TRUE(p.nbits_is_float);
  EXPECT_TRUE(p.round_zero);  // 4.0 == 4 in Python
  EXPECT_FALSE(p.group_size.has_value());
  EXPECT_EQ(p.axis, 0);
  EXPECT_TRUE(p.view_as_float);
  EXPECT_EQ(Json::parse(c.ToJson()), Json::parse(R"({"quant_config": {"weight_quant_params":
      {"nbits": 4.0, "channel_wise": true, "group_size": null, "optimize": true,
       "round_zero": true, "axis": 0, "view_as_float": true}, "scale_quant_params": null,
       "zero_quant_params": null, "offload_meta": false}, "quant_method": "hqq",
       "skip_modules": ["lm_head"]})"));
  EXPECT_NE(c.ToJson().find("\"nbits\":4.0"), std::string::npos) << c.ToJson();
}

TEST(HqqConfigTest, DynamicConfigNormalizedLikeToDict) {
  HqqConfig c = ParseOk(R"({"quant_method": "hqq", "dynamic_config": {
      "self_attn.q_proj": {"nbits": 2, "group_size": 16, "quant_zero": true, "quant_scale": true},
      "mlp.down_proj": {"nbits": 1.58}}, "skip_modules": ["lm_head", "mlp.up_proj"]})");
  EXPECT_FALSE(c.quant_config.has_value());
  ASSERT_EQ(c.tag_configs.size(), 2u);
  const HqqWeightQuantParams& q = *c.tag_configs.at("self_attn.q_proj");
  EXPECT_EQ(q.nbits, 2);
  EXPECT_EQ(q.group_size, 16);
  EXPECT_FALSE(q.round_zero);
  EXPECT_EQ(q.axis, 1);  // BaseQuantizeConfig's default
  const HqqWeightQuantParams& d = *c.tag_configs.at("mlp.down_proj");
  EXPECT_EQ(d.max_code(), 2);  // round(2^1.58 - 1)
  EXPECT_EQ(d.group_size, 64);
  EXPECT_EQ(Json::parse(c.ToJson()), Json::parse(R"({"quant_config": {"self_attn.q_proj":
      {"weight_quant_params": {"nbits": 2, "channel_wise": true, "group_size": 16,
       "optimize": true, "round_zero": false, "axis": 1, "view_as_float": false},
       "scale_quant_params": {"nbits": 8, "channel_wise": true, "group_size": 128,
       "optimize": false}, "zero_quant_params": {"nbits": 8, "channel_wise": false,
       "group_size": null, "optimize": false}, "offload_meta": false},
      "mlp.down_proj": {"weight_quant_params": {"nbits": 1.58, "channel_wise": true,
       "group_size": 64, "optimize": true, "round_zero": false, "axis": 1,
       "view_as_float": false}, "scale_quant_params": null, "zero_quant_params": null,
       "offload_meta": false}}, "quant_method": "hqq",
       "skip_modules": ["lm_head", "mlp.up_proj"]})"));
}

TEST(HqqConfigTest, EveryHqqBitWidthIsAccepted) {
  for (const char* bits : {"8", "6", "5", "4", "3", "2", "1.58", "1"}) {
    HqqConfig c = ParseOk(std::string(R"({"quant_method": "hqq", "nbits": )") + bits + "}");
    EXPECT_EQ(c.quant_config->round_zero, std::string(bits) == "4") << bits;
  }
  EXPECT_EQ(ParseOk(R"({"nbits": 5})").quant_config->max_code(), 31);
  EXPECT_EQ(ParseOk(R"({"nbits": 6})").quant_config->max_code(), 63);
  EXPECT_EQ(ParseOk(R"({"nbits": 8})").quant_config->max_code(), 255);
  EXPECT_EQ(ParseOk(R"({"nbits": 1})").quant_config->max_code(), 1);
}

TEST(HqqConfigTest, UnknownTopLevelKeysAreIgnoredLikeKwargs) {
  HqqConfig c = ParseOk(R"({"quant_method": "hqq", "bits": 3, "foo": [1]})");
  EXPECT_EQ(c.quant_config->nbits, 4);
}

// ---- validation: one test per rule ----

TEST(HqqConfigTest, NbitsOutsideSupportedBitsIsInvalid) {
  ExpectInvalid(R"({"nbits": 7})",
                std::string("quantization_config.nbits must be ") + kBits + " (got 7)");
  ExpectInvalid(R"({"nbits": 1.5})",
                std::string("quantization_config.nbits must be ") + kBits + " (got 1.5)");
  ExpectInvalid(R"({"nbits": "4"})",
                std::string("quantization_config.nbits must be ") + kBits + " (got \"4\")");
  ExpectInvalid(R"({"nbits": null})",
                std::string("quantization_config.nbits must be ") + kBits + " (got null)");
  // Python accepts True (== 1); a boolean bit width is refused here.
  EXPECT_FALSE(HqqConfig::Parse(R"({"nbits": true})").ok());
}

TEST(HqqConfigTest, GroupSizeMustBeAPositiveMultipleOf8) {
  ExpectInvalid(R"({"group_size": 12})",
                std::string("quantization_config.group_size must be ") + kGroup + " (got 12)");
  // hqq's config accepts 0 and -8, then fails when quantizing; refused up front here.
  ExpectInvalid(R"({"group_size": 0})",
                std::string("quantization_config.group_size must be ") + kGroup + " (got 0)");
  ExpectInvalid(R"({"group_size": -8})",
                std::string("quantization_config.group_size must be ") + kGroup + " (got -8)");
  ExpectInvalid(R"({"group_size": 64.0})",
                std::string("quantization_config.group_size must be ") + kGroup + " (got 64.0)");
}

TEST(HqqConfigTest, AxisMustBe0Or1) {
  ExpectInvalid(R"({"axis": 2})", "quantization_config.axis must be 0 or 1 (got 2)");
  ExpectInvalid(R"({"axis": "1"})", "quantization_config.axis must be 0 or 1 (got \"1\")");
  EXPECT_EQ(ParseOk(R"({"axis": null})").quant_config->axis, 1);
  // HqqConfig checks the top-level axis even when dynamic_config replaces it.
  ExpectInvalid(R"({"axis": 2, "dynamic_config": {"mlp.up_proj": {}}})",
                "quantization_config.axis must be 0 or 1 (got 2)");
}

TEST(HqqConfigTest, ViewAsFloatMustBeABool) {
  ExpectInvalid(R"({"view_as_float": 1})",
                "quantization_config.view_as_float must be true or false (got 1)");
}

TEST(HqqConfigTest, SkipModulesMustBeAListOfTags) {
  ExpectInvalid(R"({"skip_modules": "lm_head"})",
                "quantization_config.skip_modules must be a list of module names (got "
                "\"lm_head\")");
  ExpectInvalid(R"({"skip_modules": null})",
                "quantization_config.skip_modules must be a list of linear tags (got null)");
  EXPECT_EQ(ParseOk(R"({"skip_modules": []})").skip_modules, std::vector<std::string>{});
}

TEST(HqqConfigTest, DynamicConfigMustBeANonEmptyObjectOfObjects) {
  const std::string what = "a non-empty object of linear tag -> BaseQuantizeConfig arguments";
  ExpectInvalid(R"({"dynamic_config": {}})",
                "quantization_config.dynamic_config must be " + what + " (got {})");
  ExpectInvalid(R"({"dynamic_config": [1]})",
                "quantization_config.dynamic_config must be " + what + " (got [1])");
  EXPECT_FALSE(HqqConfig::Parse(R"({"dynamic_config": {"mlp.up_proj": 4}})").ok());
}

TEST(HqqConfigTest, DynamicConfigValuesAreValidatedWithTheirPath) {
  ExpectInvalid(R"({"dynamic_config": {"mlp.up_proj": {"nbits": 7}}})",
                std::string("quantization_config.dynamic_config.mlp.up_proj.nbits must be ") +
                    kBits + " (got 7)");
  ExpectInvalid(R"({"dynamic_config": {"mlp.up_proj": {"group_size": 20}}})",
                std::string("quantization_config.dynamic_config.mlp.up_proj.group_size must "
                            "be ") +
                    kGroup + " (got 20)");
  // BaseQuantizeConfig does not check axis; hqq's Quantizer asserts it at load.
  ExpectInvalid(R"({"dynamic_config": {"mlp.up_proj": {"axis": null}}})",
                "quantization_config.dynamic_config.mlp.up_proj.axis must be 0 or 1 (got null)");
  ExpectInvalid(R"({"dynamic_config": {"mlp.up_proj": {"bits": 4}}})",
                "quantization_config.dynamic_config.mlp.up_proj.bits is not an argument of "
                "hqq's BaseQuantizeConfig (it takes nbits, group_size, quant_zero, quant_scale, "
                "offload_meta, view_as_float, axis)");
  ExpectInvalid(R"({"dynamic_config": {"mlp.up_proj": {"quant_zero": 1}}})",
                "quantization_config.dynamic_config.mlp.up_proj.quant_zero must be true or "
                "false (got 1)");
}

TEST(HqqConfigTest, TopLevelWeightArgsAreIgnoredWithDynamicConfig) {
  HqqConfig c = ParseOk(R"({"nbits": 7, "group_size": 12, "dynamic_config": {"a": {"nbits": 4}}})");
  EXPECT_EQ(c.tag_configs.at("a")->nbits, 4);
}

TEST(HqqConfigTest, OffloadMetaIsUnimplemented) {
  auto c = HqqConfig::Parse(R"({"dynamic_config": {"mlp.up_proj": {"offload_meta": true}}})");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(c.status().message().find(
                "quantization_config.dynamic_config.mlp.up_proj.offload_meta=true is accepted "
                "by hqq but not supported here"),
            absl::string_view::npos)
      << c.status();
}

// ---- the to_dict form (HqqConfig.from_dict) ----

constexpr char kLayer[] =
    R"({"weight_quant_params": {"nbits": 3, "channel_wise": true, "group_size": 24,
        "optimize": false, "axis": 1}, "scale_quant_params": null, "zero_quant_params": null,
        "offload_meta": false})";

TEST(HqqConfigTest, ToDictFormIsEchoedVerbatim) {
  const std::string text = std::string(R"({"quant_method": "hqq", "nbits": 7, "quant_config": )") +
                           kLayer + R"(, "skip_modules": ["lm_head", "mlp.up_proj"]})";
  HqqConfig c = ParseOk(text);
  ASSERT_TRUE(c.quant_config.has_value());
  const HqqWeightQuantParams& p = *c.quant_config;
  EXPECT_EQ(p.nbits, 3);
  EXPECT_EQ(p.group_size, 24);  // only a multiple of 8 through BaseQuantizeConfig
  EXPECT_FALSE(p.optimize);
  EXPECT_FALSE(p.round_zero);  // Quantizer.quantize's default, not BaseQuantizeConfig's
  EXPECT_TRUE(p.has_channel_wise);
  EXPECT_TRUE(p.has_optimize);
  EXPECT_FALSE(p.has_round_zero);
  EXPECT_EQ(c.skip_modules, (std::vector<std::string>{"lm_head", "mlp.up_proj"}));
  Json want = {{"quant_config", Json::parse(kLayer)},
               {"quant_method", "hqq"},
               {"skip_modules", {"lm_head", "mlp.up_proj"}}};
  EXPECT_EQ(Json::parse(c.ToJson()), want);
  // HqqConfig.from_dict -> to_dict round trip.
  EXPECT_EQ(Json::parse(ParseOk(c.ToJson()).ToJson()), want);
}

TEST(HqqConfigTest, ToDictFormMissingKeysTakeQuantizerDefaults) {
  HqqConfig c = ParseOk(R"({"quant_config": {"weight_quant_params": {"group_size": 64},
      "scale_quant_params": null, "zero_quant_params": null, "offload_meta": false},
      "skip_modules": []})");
  const HqqWeightQuantParams& p = *c.quant_config;
  EXPECT_EQ(p.nbits, 4);
  EXPECT_EQ(p.axis, 0);
  EXPECT_FALSE(p.round_zero);
  EXPECT_TRUE(p.optimize);
  EXPECT_FALSE(p.has_channel_wise || p.has_optimize || p.has_round_zero || p.has_bitpack);
}

TEST(HqqConfigTest, ToDictFormPerTagWithNull) {
  HqqConfig c = ParseOk(std::string(R"({"quant_config": {"mlp.up_proj": )") + kLayer +
                        R"(, "mlp.down_proj": null}, "skip_modules": ["lm_head"]})");
  EXPECT_FALSE(c.quant_config.has_value());
  EXPECT_EQ(c.tag_configs.at("mlp.up_proj")->nbits, 3);
  EXPECT_FALSE(c.tag_configs.at("mlp.down_proj").has_value());
}

TEST(HqqConfigTest, ToDictFormNeedsSkipModulesAndAnObject) {
  ExpectInvalid(std::string(R"({"quant_config": )") + kLayer + "}",
                "quantization_config.skip_modules must be a list of linear tags "
                "(HqqConfig.from_dict reads it with quant_config) (got nothing)");
  ExpectInvalid(R"({"quant_config": null, "skip_modules": []})",
                "quantization_config.quant_config must be an object: one layer config or "
                "linear tag -> layer config (or null) (got null)");
}

TEST(HqqConfigTest, ToDictFormLayerNeedsExactlyHqqLinearsKeys) {
  ExpectInvalid(R"({"quant_config": {"weight_quant_params": {"group_size": 64},
      "scale_quant_params": null, "zero_quant_params": null}, "skip_modules": []})",
                "quantization_config.quant_config.offload_meta must be present (HQQLinear "
                "reads it) (got nothing)");
  ExpectInvalid(R"({"quant_config": {"weight_quant_params": {"group_size": 64},
      "scale_quant_params": null, "zero_quant_params": null, "offload_meta": false, "x": 1},
      "skip_modules": []})",
                "quantization_config.quant_config.x is not an argument of HQQLinear.quantize "
                "(it takes weight_quant_params, scale_quant_params, zero_quant_params, "
                "offload_meta)");
  ExpectInvalid(R"({"quant_config": {"weight_quant_params": {"nbits": 4},
      "scale_quant_params": null, "zero_quant_params": null, "offload_meta": false},
      "skip_modules": []})",
                "quantization_config.quant_config.weight_quant_params.group_size must be present "
                "(HQQLinear.initialize reads it) (got nothing)");
  ExpectInvalid(R"({"quant_config": {"weight_quant_params": {"group_size": 64, "device": "cpu"},
      "scale_quant_params": null, "zero_quant_params": null, "offload_meta": false},
      "skip_modules": []})",
                "quantization_config.quant_config.weight_quant_params.device is not an argument "
                "of hqq's Quantizer.quantize (it takes nbits, channel_wise, group_size, optimize, "
                "round_zero, axis, view_as_float, bitpack)");
  ExpectInvalid(R"({"quant_config": {"weight_quant_params": {"group_size": 0},
      "scale_quant_params": null, "zero_quant_params": null, "offload_meta": false},
      "skip_modules": []})",
                "quantization_config.quant_config.weight_quant_params.group_size must be null or "
                "a positive integer (got 0)");
  ExpectInvalid(R"({"quant_config": {"mlp.up_proj": {"weight_quant_params": {"group_size": 64,
      "nbits": 9}, "scale_quant_params": null, "zero_quant_params": null, "offload_meta": false}},
      "skip_modules": []})",
                std::string("quantization_config.quant_config.mlp.up_proj.weight_quant_params."
                            "nbits must be ") +
                    kBits + " (got 9)");
}

TEST(HqqConfigTest, ToDictFormUnsupportedHqqOptionsAreUnimplemented) {
  for (const char* option : {R"("channel_wise": false)", R"("bitpack": false)"}) {
    auto c = HqqConfig::Parse(
        std::string(R"({"quant_config": {"weight_quant_params": {"group_size": 64, )") + option +
        R"(}, "scale_quant_params": null, "zero_quant_params": null, "offload_meta": false},
            "skip_modules": []})");
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented) << option;
    EXPECT_NE(c.status().message().find("is accepted by hqq but not supported here"),
              absl::string_view::npos)
        << c.status();
  }
  auto c = HqqConfig::Parse(R"({"quant_config": {"weight_quant_params": {"group_size": 64},
      "scale_quant_params": null, "zero_quant_params": null, "offload_meta": true},
      "skip_modules": []})");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
}

TEST(HqqConfigTest, NotAnObjectIsInvalid) {
  EXPECT_EQ(HqqConfig::Parse("[]").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantserve::quant

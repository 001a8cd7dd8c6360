#include "quant/methods/eetq/eetq_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "quant/methods/eetq/eetq_quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {
namespace {

using nlohmann::json;

void ExpectInvalid(const std::string& config, const std::string& message) {
  auto c = EetqConfig::Parse(config);
  ASSERT_FALSE(c.ok()) << config;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(), message);
}

TEST(EetqConfigTest, DefaultsAreTransformers) {
  auto c = EetqConfig::Parse(R"({"quant_method": "eetq"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->weights, "int8");
  EXPECT_FALSE(c->modules_to_not_convert.has_value());
  EXPECT_EQ(json::parse(c->ToJson()), json::parse(R"({"quant_method": "eetq", "weights": "int8",
                            "modules_to_not_convert": null})"));
}

TEST(EetqConfigTest, NormalizedJsonKeepsModulesAndDropsUnknownKeys) {
  auto c = EetqConfig::Parse(
      R"({"quant_method": "eetq", "weights": "int8",
          "modules_to_not_convert": ["lm_head", "v_proj"], "bits": 4})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(json::parse(c->ToJson()), json::parse(R"({"quant_method": "eetq", "weights": "int8",
                            "modules_to_not_convert": ["lm_head", "v_proj"]})"));
}

// post_init: `if self.weights not in ["int8"]: raise ValueError`.
TEST(EetqConfigTest, WeightsMustBeInt8) {
  ExpectInvalid(R"({"quant_method": "eetq", "weights": "int4"})",
                R"(quantization_config.weights must be one of "int8" (got "int4"))");
}

TEST(EetqConfigTest, WeightsIsCaseSensitive) {
  ExpectInvalid(R"({"weights": "INT8"})",
                R"(quantization_config.weights must be one of "int8" (got "INT8"))");
}

TEST(EetqConfigTest, WeightsNullIsRejectedLikeNone) {
  ExpectInvalid(R"({"weights": null})",
                R"(quantization_config.weights must be one of "int8" (got null))");
}

TEST(EetqConfigTest, WeightsMustBeAString) {
  ExpectInvalid(R"({"weights": 8})",
                R"(quantization_config.weights must be one of "int8" (got 8))");
}

TEST(EetqConfigTest, ModulesToNotConvertMustBeAListOfStrings) {
  ExpectInvalid(R"({"modules_to_not_convert": "lm_head"})",
                "quantization_config.modules_to_not_convert must be a list of module names "
                R"((got "lm_head"))");
  ExpectInvalid(R"({"modules_to_not_convert": ["lm_head", 3]})",
                "quantization_config.modules_to_not_convert must be a list of strings "
                R"((got ["lm_head",3]))");
}

TEST(EetqConfigTest, ModulesToNotConvertNullIsTheDefault) {
  auto c = EetqConfig::Parse(R"({"modules_to_not_convert": null})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->modules_to_not_convert.has_value());
}

TEST(EetqConfigTest, NotAnObjectIsInvalid) {
  EXPECT_EQ(EetqConfig::Parse("[1]").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EetqConfigTest, RegistryBuildsTheQuantizerWithTransformersTraits) {
  QuantizerRegistry registry;
  ASSERT_TRUE(RegisterEetqQuantizer(registry).ok());
  auto q = registry.Create(R"({"quant_method": "eetq"})", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "eetq");
  EXPECT_FALSE((*q)->traits().requires_calibration);
  EXPECT_TRUE((*q)->traits().is_serializable);
  EXPECT_TRUE((*q)->traits().is_trainable);
  EXPECT_EQ(json::parse((*q)->NormalizedConfigJson())["weights"], "int8");
  // transformers 5.23's update_dtype keeps the requested dtype (it only suggests float16).
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    EXPECT_EQ((*q)->UpdateTorchDtype(dtype), dtype);
  }
  auto bad = registry.Create(R"({"quant_method": "eetq", "weights": "int4"})", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EetqConfigTest, BuiltinRegistryHasEetq) {
  const auto methods = BuiltinQuantizerRegistry().methods();
  EXPECT_NE(std::find(methods.begin(), methods.end(), "eetq"), methods.end());
}

}  // namespace
}  // namespace quantserve::quant

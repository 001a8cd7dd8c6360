#include "quant/methods/quanto/quanto_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "quant/methods/quanto/quanto_quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {
namespace {

// INVALID_ARGUMENT whose message contains every one of `parts`.
void ExpectInvalid(const std::string& json, const std::vector<std::string>& parts) {
  auto c = QuantoConfig::Parse(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << json;
  for (const auto& p : parts) {
    EXPECT_NE(c.status().message().find(p), absl::string_view::npos)
        << json << " -> " << c.status();
  }
}

TEST(QuantoConfigTest, DefaultsAreTransformers) {
  auto c = QuantoConfig::Parse(R"({"quant_method": "quanto"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->weights, "int8");
  EXPECT_FALSE(c->activations.has_value());
  EXPECT_FALSE(c->modules_to_not_convert.has_value());
}

TEST(QuantoConfigTest, ToJsonIsToDictInItsKeyOrder) {
  // QuantoConfig().to_dict() in transformers 5.23, written with json.dumps.
  auto c = QuantoConfig::Parse(R"({"quant_method": "quanto"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ToJson(), R"({"quant_method":"quanto","weights":"int8","activations":null,)"
                         R"("modules_to_not_convert":null})");
  c = QuantoConfig::Parse(
      R"({"weights": "int2", "activations": "float8", "modules_to_not_convert": ["lm_head"]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ToJson(), R"({"quant_method":"quanto","weights":"int2","activations":"float8",)"
                         R"("modules_to_not_convert":["lm_head"]})");
}

TEST(QuantoConfigTest, EveryAcceptedValueParses) {
  for (const char* w : {"float8", "int8", "int4", "int2"}) {
    for (const char* a : {"null", "\"int8\"", "\"float8\""}) {
      const std::string json =
          std::string(R"({"weights": ")") + w + R"(", "activations": )" + a + "}";
      auto c = QuantoConfig::Parse(json);
      ASSERT_TRUE(c.ok()) << json << c.status();
      EXPECT_EQ(c->weights, w);
      EXPECT_EQ(c->activations.has_value(), std::string(a) != "null");
    }
  }
}

TEST(QuantoConfigTest, WeightsMustBeAcceptedName) {
  const std::vector<std::string> allowed = {"quantization_config.weights must be one of",
                                            R"("float8", "int8", "int4", "int2")"};
  ExpectInvalid(R"({"weights": "int3"})", allowed);
  ExpectInvalid(R"({"weights": "INT8"})", allowed);  // post_init compares exactly
  ExpectInvalid(R"({"weights": 8})", allowed);
  // An explicit null is stored as None and refused, unlike a missing key.
  ExpectInvalid(R"({"weights": null})", {"weights must be one of", "(got null)"});
}

TEST(QuantoConfigTest, ActivationsMustBeNullOrAcceptedName) {
  const std::vector<std::string> allowed = {
      R"(quantization_config.activations must be null or one of "int8", "float8")"};
  ExpectInvalid(R"({"activations": "int4"})", allowed);
  ExpectInvalid(R"({"activations": "fp8"})", allowed);
  ExpectInvalid(R"({"activations": true})", allowed);
}

TEST(QuantoConfigTest, ModulesToNotConvertIsAListOfStrings) {
  auto c = QuantoConfig::Parse(R"({"modules_to_not_convert": ["lm_head", "layers.1"]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c->modules_to_not_convert, (std::vector<std::string>{"lm_head", "layers.1"}));
  ExpectInvalid(R"({"modules_to_not_convert": "lm_head"})", {"modules_to_not_convert"});
  ExpectInvalid(R"({"modules_to_not_convert": [1]})", {"modules_to_not_convert"});
}

TEST(QuantoConfigTest, UnknownKeysAreIgnoredAndNotReported) {
  auto c = QuantoConfig::Parse(R"({"weights": "int4", "group_size": 64})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(nlohmann::json::parse(c->ToJson()).count("group_size"), 0u);
}

TEST(QuantoConfigTest, NotAnObject) {
  EXPECT_EQ(QuantoConfig::Parse("[1]").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantoConfigTest, RegistryBuildsTheQuantizer) {
  auto q =
      BuiltinQuantizerRegistry().Create(R"({"quant_method": "quanto", "weights": "int4"})", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "quanto");
  EXPECT_FALSE((*q)->traits().is_serializable);
  EXPECT_TRUE((*q)->traits().is_trainable);
  EXPECT_FALSE((*q)->traits().requires_calibration);
  EXPECT_FALSE((*q)->WantsCalibration());
  EXPECT_EQ(nlohmann::json::parse((*q)->NormalizedConfigJson())["weights"], "int4");
  auto bad = BuiltinQuantizerRegistry().Create(R"({"quant_method": "quanto", "weights": "x"})", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  auto a8 =
      BuiltinQuantizerRegistry().Create(R"({"quant_method": "quanto", "activations": "int8"})", "");
  ASSERT_TRUE(a8.ok()) << a8.status();
  EXPECT_TRUE((*a8)->WantsCalibration());
}

}  // namespace
}  // namespace quantserve::quant

#include "quant/methods/fbgemm_fp8/fbgemm_fp8_config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "quant/methods/fbgemm_fp8/fbgemm_fp8_quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {
namespace {

using nlohmann::json;

void ExpectInvalid(const std::string& config, const std::string& message) {
  auto c = FbgemmFp8Config::Parse(config);
  ASSERT_FALSE(c.ok()) << config;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(), message);
}

TEST(FbgemmFp8ConfigTest, DefaultsAreTransformers) {
  auto c = FbgemmFp8Config::Parse(R"({"quant_method": "fbgemm_fp8"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->activation_scale_ub, 1200.0);
  EXPECT_FALSE(c->modules_to_not_convert.has_value());
  EXPECT_EQ(json::parse(c->ToJson()),
            json::parse(R"({"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                            "modules_to_not_convert": null})"));
}

TEST(FbgemmFp8ConfigTest, NormalizedJsonKeepsValuesAndDropsUnknownKeys) {
  auto c = FbgemmFp8Config::Parse(
      R"({"quant_method": "fbgemm_fp8", "activation_scale_ub": 8, "modules_to_not_convert":
          ["lm_head"], "weights": "fp8"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->activation_scale_ub, 8.0);  // an int is a number (transformers keeps it as is)
  EXPECT_EQ(json::parse(c->ToJson()),
            json::parse(R"({"quant_method": "fbgemm_fp8", "activation_scale_ub": 8.0,
                            "modules_to_not_convert": ["lm_head"]})"));
}

// transformers has no post_init for FbgemmFp8Config; a non-number only fails at load, in
// `input_scale_ub.fill_(activation_scale_ub)`. We refuse it up front.
TEST(FbgemmFp8ConfigTest, ActivationScaleUbMustBeANumber) {
  ExpectInvalid(R"({"activation_scale_ub": "1200"})",
                R"(quantization_config.activation_scale_ub must be a number (got "1200"))");
  ExpectInvalid(R"({"activation_scale_ub": true})",
                R"(quantization_config.activation_scale_ub must be a number (got true))");
}

TEST(FbgemmFp8ConfigTest, ActivationScaleUbNullIsRejectedLikeNone) {
  ExpectInvalid(R"({"activation_scale_ub": null})",
                R"(quantization_config.activation_scale_ub must be a number (got null))");
}

TEST(FbgemmFp8ConfigTest, ModulesToNotConvertMustBeAListOfStrings) {
  ExpectInvalid(R"({"modules_to_not_convert": {"lm_head": 1}})",
                "quantization_config.modules_to_not_convert must be a list of module names "
                R"((got {"lm_head":1}))");
}

TEST(FbgemmFp8ConfigTest, NotAnObjectIsInvalid) {
  EXPECT_EQ(FbgemmFp8Config::Parse("\"fbgemm_fp8\"").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(FbgemmFp8ConfigTest, RegistryBuildsTheQuantizerWithTransformersTraitsAndDtype) {
  QuantizerRegistry registry;
  ASSERT_TRUE(RegisterFbgemmFp8Quantizer(registry).ok());
  auto q = registry.Create(R"({"quant_method": "fbgemm_fp8", "activation_scale_ub": 4.5})", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "fbgemm_fp8");
  EXPECT_FALSE((*q)->traits().requires_calibration);
  EXPECT_TRUE((*q)->traits().is_serializable);
  EXPECT_FALSE((*q)->traits().is_trainable);
  EXPECT_EQ(json::parse((*q)->NormalizedConfigJson())["activation_scale_ub"], 4.5);
  // transformers 5.23 update_dtype: anything but bfloat16 is overridden to bfloat16.
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    EXPECT_EQ((*q)->UpdateTorchDtype(dtype), at::kBFloat16);
  }
}

TEST(FbgemmFp8ConfigTest, BuiltinRegistryHasFbgemmFp8) {
  const auto methods = BuiltinQuantizerRegistry().methods();
  EXPECT_NE(std::find(methods.begin(), methods.end(), "fbgemm_fp8"), methods.end());
}

}  // namespace
}  // namespace quantserve::quant

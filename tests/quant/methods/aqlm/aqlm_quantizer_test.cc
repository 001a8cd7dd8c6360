#include "quant/methods/aqlm/aqlm_quantizer.h"

#include <gtest/gtest.h>

#include "quant/quantizer_registry.h"
#include "tests/quant/quant_testing.h"

namespace quantserve::quant {
namespace {

TEST(AqlmQuantizerTest, UnquantizedCheckpointIsFailedPreconditionWithTheReason) {
  auto loaded = testing::LoadDefaultModel(R"({"quant_method": "aqlm"})");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition) << loaded.status();
  EXPECT_NE(loaded.status().message().find("AQLM needs calibration data"), absl::string_view::npos)
      << loaded.status();
  EXPECT_NE(loaded.status().message().find("requires_calibration"), absl::string_view::npos);
  EXPECT_NE(loaded.status().message().find("bitsandbytes, hqq, quanto, eetq, fbgemm_fp8, torchao"),
            absl::string_view::npos);
}

TEST(AqlmQuantizerTest, InvalidConfigFailsTheLoadWithInvalidArgument) {
  auto loaded = testing::LoadDefaultModel(R"({"quant_method": "aqlm", "num_codebooks": 1.5})");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
}

TEST(AqlmQuantizerTest, PrequantizedCheckpointIsSupported) {
  auto q = CreateAqlmQuantizer(R"({"quant_method": "aqlm"})");
  ASSERT_TRUE(q.ok()) << q.status();
  LoadTarget target;
  target.checkpoint_is_prequantized = true;
  EXPECT_TRUE((*q)->ValidateEnvironment(target).ok());
}

TEST(AqlmQuantizerTest, TraitsAreTransformers) {
  auto q = CreateAqlmQuantizer("{}");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "aqlm");
  EXPECT_TRUE((*q)->traits().requires_calibration);
  EXPECT_TRUE((*q)->traits().is_serializable);
  EXPECT_TRUE((*q)->traits().is_trainable);
}

TEST(AqlmQuantizerTest, RegisteredUnderAqlmWithTheNormalizedConfig) {
  auto q = BuiltinQuantizerRegistry().Create(R"({"quant_method": "aqlm", "num_codebooks": 2})", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "aqlm");
  auto j = nlohmann::json::parse((*q)->NormalizedConfigJson());
  EXPECT_EQ(j["num_codebooks"], 2);
  EXPECT_EQ(j["linear_weights_not_to_quantize"], nlohmann::json::array());
}

}  // namespace
}  // namespace quantserve::quant

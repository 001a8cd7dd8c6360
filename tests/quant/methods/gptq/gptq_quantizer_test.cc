#include "quant/methods/gptq/gptq_quantizer.h"

#include <gtest/gtest.h>

#include "quant/quantizer_registry.h"
#include "tests/quant/quant_testing.h"

namespace quantserve::quant {
namespace {

TEST(GptqQuantizerTest, UnquantizedCheckpointIsFailedPreconditionWithTheReason) {
  // The default model has no quantization_config, so the config asks to quantize at load.
  auto loaded = testing::LoadDefaultModel(R"({"quant_method": "gptq", "bits": 4})");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition) << loaded.status();
  EXPECT_NE(loaded.status().message().find("GPTQ needs a calibration dataset and a GPTQ run"),
            absl::string_view::npos)
      << loaded.status();
  EXPECT_NE(loaded.status().message().find("quantserve does not run GPTQ at load"),
            absl::string_view::npos);
  EXPECT_NE(loaded.status().message().find("bitsandbytes, hqq, quanto, eetq, fbgemm_fp8, torchao"),
            absl::string_view::npos);
}

TEST(GptqQuantizerTest, InvalidConfigFailsTheLoadWithInvalidArgument) {
  auto loaded = testing::LoadDefaultModel(R"({"quant_method": "gptq", "bits": 5})");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
  EXPECT_NE(loaded.status().message().find("quantization_config.bits must be one of 2, 3, 4, 8"),
            absl::string_view::npos)
      << loaded.status();
}

TEST(GptqQuantizerTest, PrequantizedCheckpointIsSupported) {
  auto q = CreateGptqQuantizer(R"({"quant_method": "gptq", "bits": 4})");
  ASSERT_TRUE(q.ok()) << q.status();
  LoadTarget target;
  target.checkpoint_is_prequantized = true;
  EXPECT_TRUE((*q)->ValidateEnvironment(target).ok());
}

TEST(GptqQuantizerTest, TraitsAreTransformers) {
  auto q = CreateGptqQuantizer(R"({"bits": 4})");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "gptq");
  EXPECT_FALSE((*q)->traits().requires_calibration);
  EXPECT_TRUE((*q)->traits().is_serializable);
  EXPECT_TRUE((*q)->traits().is_trainable);
}

TEST(GptqQuantizerTest, RegisteredUnderGptqWithTheNormalizedConfig) {
  auto q = BuiltinQuantizerRegistry().Create(R"({"quant_method": "gptq", "bits": 3})", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "gptq");
  auto j = nlohmann::json::parse((*q)->NormalizedConfigJson());
  EXPECT_EQ(j["bits"], 3);
  EXPECT_EQ(j["checkpoint_format"], "gptq");
  QuantizerRegistry registry;
  ASSERT_TRUE(RegisterGptqQuantizer(registry).ok());
  EXPECT_EQ(RegisterGptqQuantizer(registry).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace quantserve::quant

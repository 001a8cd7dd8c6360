#include "quant/methods/compressed_tensors/compressed_tensors_quantizer.h"

#include <gtest/gtest.h>

#include "quant/quantizer_registry.h"
#include "tests/quant/quant_testing.h"

namespace quantserve::quant {
namespace {

const char kW4A16[] =
    R"({"quant_method": "compressed-tensors", "config_groups": {"group_0": {"targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group",
                    "group_size": 128}}},
        "format": "pack-quantized", "quantization_status": "compressed", "ignore": ["lm_head"]})";

TEST(CompressedTensorsQuantizerTest, UnquantizedCheckpointIsFailedPreconditionWithTheReason) {
  auto loaded = testing::LoadDefaultModel(kW4A16);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition) << loaded.status();
  EXPECT_NE(loaded.status().message().find(
                "compressed-tensors checkpoints are produced offline by llm-compressor"),
            absl::string_view::npos)
      << loaded.status();
  EXPECT_NE(loaded.status().message().find("requires_calibration"), absl::string_view::npos);
  EXPECT_NE(loaded.status().message().find("bitsandbytes, hqq, quanto, eetq, fbgemm_fp8, torchao"),
            absl::string_view::npos);
  // Also with a preset group and with no groups at all.
  for (const char* config :
       {R"({"quant_method": "compressed-tensors", "config_groups": {"FP8_DYNAMIC": ["Linear"]}})",
        R"({"quant_method": "compressed-tensors"})"}) {
    EXPECT_EQ(testing::LoadDefaultModel(config).status().code(),
              absl::StatusCode::kFailedPrecondition)
        << config;
  }
}

TEST(CompressedTensorsQuantizerTest, InvalidConfigFailsTheLoadWithInvalidArgument) {
  auto loaded = testing::LoadDefaultModel(
      R"({"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": {"strategy": "group"}}}})");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
  EXPECT_NE(loaded.status().message().find("config_groups.g.weights.group_size must be > 0"),
            absl::string_view::npos)
      << loaded.status();
}

TEST(CompressedTensorsQuantizerTest, PrequantizedCompressedCheckpointsAreSupported) {
  auto q = CreateCompressedTensorsQuantizer(kW4A16);
  ASSERT_TRUE(q.ok()) << q.status();
  LoadTarget target;
  target.checkpoint_is_prequantized = true;
  EXPECT_TRUE((*q)->ValidateEnvironment(target).ok());
  // Frozen (fake-quantized float) checkpoints and quantized attention are not.
  auto frozen = CreateCompressedTensorsQuantizer(
      R"({"config_groups": {"W4A16": ["Linear"]}, "quantization_status": "frozen"})");
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  absl::Status s = (*frozen)->ValidateEnvironment(target);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("quantization_status \"frozen\""), absl::string_view::npos) << s;
}

TEST(CompressedTensorsQuantizerTest, InvalidRegexTargetIsInvalidArgument) {
  auto q = CreateCompressedTensorsQuantizer(
      R"({"config_groups": {"W4A16": ["Linear"]}, "ignore": ["re:(unclosed"]})");
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(q.status().message().find("quantization_config.ignore entry \"re:(unclosed\" is not "
                                      "a valid regex"),
            absl::string_view::npos)
      << q.status();
}

TEST(CompressedTensorsQuantizerTest, NormalizedConfigCarriesTheLoadingAttributes) {
  auto q = CreateCompressedTensorsQuantizer(
      R"({"config_groups": {"W4A16": ["Linear"]}, "run_compressed": false})");
  ASSERT_TRUE(q.ok()) << q.status();
  auto j = nlohmann::json::parse((*q)->NormalizedConfigJson());
  EXPECT_EQ(j["dequantize"], true);
  EXPECT_EQ(j["use_optimized_inference"], false);
  // What SaveModel writes is compressed-tensors' update_config form, without them.
  auto saved = nlohmann::json::parse((*q)->SerializedConfigJson());
  EXPECT_FALSE(saved.contains("dequantize"));
  EXPECT_EQ(saved["version"], "0.20.0");
  EXPECT_EQ(saved["quantization_status"], "compressed");
  EXPECT_EQ(saved["sparsity_config"], nlohmann::json::object());
}

TEST(CompressedTensorsQuantizerTest, TraitsAreTransformers) {
  auto q = CreateCompressedTensorsQuantizer(kW4A16);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "compressed-tensors");
  EXPECT_TRUE((*q)->traits().requires_calibration);
  EXPECT_TRUE((*q)->traits().is_serializable);
  EXPECT_TRUE((*q)->traits().is_trainable);
  // The FP8 kernel path is inference-only.
  auto fp8 = CreateCompressedTensorsQuantizer(
      R"({"config_groups": {"FP8_DYNAMIC": ["Linear"]}, "use_optimized_inference": true})");
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  EXPECT_FALSE((*fp8)->traits().is_trainable);
}

TEST(CompressedTensorsQuantizerTest, RegisteredUnderCompressedTensorsWithTheNormalizedConfig) {
  auto q = BuiltinQuantizerRegistry().Create(kW4A16, "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "compressed-tensors");
  auto j = nlohmann::json::parse((*q)->NormalizedConfigJson());
  EXPECT_EQ(j["config_groups"]["group_0"]["weights"]["strategy"], "group");
  EXPECT_EQ(j["quantization_status"], "compressed");
  EXPECT_EQ(j["ignore"], nlohmann::json::array({"lm_head"}));
}

}  // namespace
}  // namespace quantserve::quant

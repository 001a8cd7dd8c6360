#include "quant/methods/aqlm/aqlm_config.h"

#include <gtest/gtest.h>

namespace quantserve::quant {
namespace {

AqlmConfig Parse(const std::string& json) {
  auto c = AqlmConfig::Parse(json);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : AqlmConfig{};
}

void ExpectInvalid(const std::string& json, const std::string& message) {
  auto c = AqlmConfig::Parse(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_EQ(c.status().message(), message);
}

// Golden strings: json.dumps(AqlmConfig(**cfg).to_dict(), separators=(",", ":")) from the
// pinned transformers 5.23.
TEST(AqlmConfigTest, DefaultsAndNormalizedJsonMatchTransformers) {
  AqlmConfig c = Parse(R"({"quant_method": "aqlm"})");
  EXPECT_EQ(c.in_group_size, 8);
  EXPECT_EQ(c.out_group_size, 1);
  EXPECT_EQ(c.num_codebooks, 1);
  EXPECT_EQ(c.nbits_per_codebook, 16);
  EXPECT_TRUE(c.linear_weights_not_to_quantize.empty());
  EXPECT_EQ(
      c.ToJson(),
      R"({"quant_method":"aqlm","in_group_size":8,"out_group_size":1,"num_codebooks":1,"nbits_per_codebook":16,"linear_weights_not_to_quantize":[]})");
}

TEST(AqlmConfigTest, CheckpointConfigNormalizesLikeTransformers) {
  AqlmConfig c = Parse(
      R"({"quant_method": "aqlm", "in_group_size": 8, "out_group_size": 1, "num_codebooks": 1,
          "nbits_per_codebook": 16,
          "linear_weights_not_to_quantize": ["model.embed_tokens.weight", "lm_head.weight"],
          "unknown_key": 1})");
  EXPECT_EQ(
      c.ToJson(),
      R"({"quant_method":"aqlm","in_group_size":8,"out_group_size":1,"num_codebooks":1,"nbits_per_codebook":16,"linear_weights_not_to_quantize":["model.embed_tokens.weight","lm_head.weight"]})");
  c = Parse(R"({"in_group_size": 32, "out_group_size": 2, "num_codebooks": 2,
                "nbits_per_codebook": 8})");
  EXPECT_EQ(c.in_group_size, 32);
  EXPECT_EQ(c.out_group_size, 2);
  EXPECT_EQ(c.num_codebooks, 2);
  EXPECT_EQ(c.nbits_per_codebook, 8);
}

TEST(AqlmConfigTest, SizesMustBeIntegers) {
  for (const char* key :
       {"in_group_size", "out_group_size", "num_codebooks", "nbits_per_codebook"}) {
    const std::string k(key);
    ExpectInvalid(R"({")" + k + R"(": 8.0})",
                  "quantization_config." + k + " must be an integer (got 8.0)");
    ExpectInvalid(R"({")" + k + R"(": "8"})",
                  "quantization_config." + k + " must be an integer (got \"8\")");
    // isinstance(None, int) is False: an explicit null is refused, not defaulted.
    ExpectInvalid(R"({")" + k + R"(": null})",
                  "quantization_config." + k + " must be an integer (got null)");
  }
}

TEST(AqlmConfigTest, LinearWeightsNotToQuantizeIsAList) {
  EXPECT_TRUE(
      Parse(R"({"linear_weights_not_to_quantize": null})").linear_weights_not_to_quantize.empty());
  ExpectInvalid(R"({"linear_weights_not_to_quantize": "lm_head.weight"})",
                "quantization_config.linear_weights_not_to_quantize must be a list of weight names "
                "(e.g. [\"lm_head.weight\"]) (got \"lm_head.weight\")");
  ExpectInvalid(R"({"linear_weights_not_to_quantize": ["lm_head.weight", 3]})",
                "quantization_config.linear_weights_not_to_quantize must be a list of strings "
                "(got [\"lm_head.weight\",3])");
}

}  // namespace
}  // namespace quantserve::quant

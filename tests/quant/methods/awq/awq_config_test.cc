#include "quant/methods/awq/awq_config.h"

#include <gtest/gtest.h>

namespace quantserve::quant {
namespace {

AwqConfig Parse(const std::string& json) {
  auto c = AwqConfig::Parse(json);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : AwqConfig{};
}

void ExpectInvalid(const std::string& json, const std::string& message) {
  auto c = AwqConfig::Parse(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_EQ(c.status().message(), message);
}

const char kFormats[] = "\"gemm\", \"gemv\", \"gemv_fast\", \"llm-awq\"";
const char kBackends[] =
    "\"autoawq\", \"auto\", \"auto_trainable\", \"machete\", \"marlin\", \"exllama_v2\", "
    "\"exllama_v1\", \"gemm\", \"gemm_triton\", \"gemv\", \"gemv_fast\", \"torch_awq\", "
    "\"torch_fused_awq\"";

// Golden strings: json.dumps(AwqConfig(**cfg).to_dict(), separators=(",", ":")) from the
// pinned transformers 5.23.
TEST(AwqConfigTest, DefaultsAndNormalizedJsonMatchTransformers) {
  AwqConfig c = Parse(R"({"quant_method": "awq"})");
  EXPECT_EQ(c.gptq.bits, 4);
  EXPECT_EQ(c.gptq.group_size, 128);
  EXPECT_TRUE(c.zero_point);
  EXPECT_EQ(c.gptq.format, "gemm");
  EXPECT_EQ(c.gptq.backend, "auto");
  EXPECT_FALSE(c.modules_to_not_convert.has_value());
  EXPECT_EQ(
      c.ToJson(),
      R"({"zero_point":true,"modules_to_not_convert":null,"quant_method":"awq","bits":4,"tokenizer":null,"dataset":null,"group_size":128,"damp_percent":0.1,"desc_act":false,"act_group_aware":true,"sym":true,"true_sequential":true,"format":"gemm","meta":null,"backend":"auto","model_seqlen":null,"block_name_to_quantize":null,"module_name_preceding_first_block":null,"batch_size":1,"pad_token_id":null,"max_input_length":null,"cache_block_outputs":true,"modules_in_block_to_quantize":null,"version":"gemm"})");
}

TEST(AwqConfigTest, CheckpointConfigNormalizesLikeTransformers) {
  // A typical AutoAWQ config.json block; the 4.x fuse options are ignored by 5.23.
  AwqConfig c = Parse(
      R"({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": true,
          "version": "GEMM", "backend": "autoawq", "modules_to_not_convert": ["visual"],
          "do_fuse": true, "modules_to_fuse": {"attention": ["q_proj"]}, "fuse_max_seq_len": 512,
          "exllama_config": {"version": 3}})");
  EXPECT_EQ(
      c.ToJson(),
      R"({"zero_point":true,"modules_to_not_convert":["visual"],"quant_method":"awq","bits":4,"tokenizer":null,"dataset":null,"group_size":128,"damp_percent":0.1,"desc_act":false,"act_group_aware":true,"sym":true,"true_sequential":true,"format":"gemm","meta":null,"backend":"auto","model_seqlen":null,"block_name_to_quantize":null,"module_name_preceding_first_block":null,"batch_size":1,"pad_token_id":null,"max_input_length":null,"cache_block_outputs":true,"modules_in_block_to_quantize":null,"version":"gemm"})");
}

TEST(AwqConfigTest, LlmAwqBackendSelectsTheLlmAwqFormat) {
  AwqConfig c = Parse(R"({"quant_method": "awq", "backend": "llm-awq"})");
  EXPECT_EQ(c.gptq.format, "llm-awq");
  EXPECT_EQ(c.gptq.backend, "auto");
  EXPECT_EQ(
      c.ToJson(),
      R"({"zero_point":true,"modules_to_not_convert":null,"quant_method":"awq","bits":4,"tokenizer":null,"dataset":null,"group_size":128,"damp_percent":0.1,"desc_act":false,"act_group_aware":true,"sym":true,"true_sequential":true,"format":"llm-awq","meta":null,"backend":"auto","model_seqlen":null,"block_name_to_quantize":null,"module_name_preceding_first_block":null,"batch_size":1,"pad_token_id":null,"max_input_length":null,"cache_block_outputs":true,"modules_in_block_to_quantize":null,"version":"llm-awq"})");
  // Lower-cased first; the mapping happens before the format check.
  c = Parse(R"({"backend": "LLM-AWQ", "version": "exllama"})");
  EXPECT_EQ(c.gptq.format, "llm-awq");
}

TEST(AwqConfigTest, FormatComesFromFormatThenVersionThenCheckpointFormat) {
  EXPECT_EQ(Parse(R"({"format": "GEMV"})").gptq.format, "gemv");
  EXPECT_EQ(Parse(R"({"format": "gemv", "version": "GEMV_FAST"})").gptq.format, "gemv_fast");
  EXPECT_EQ(Parse(R"({"format": "gemv", "version": null})").gptq.format, "gemv");
  EXPECT_EQ(Parse(R"({"version": "gemv", "checkpoint_format": "GEMM"})").gptq.format, "gemm");
}

TEST(AwqConfigTest, FormatMustBeAnAwqFormat) {
  const std::string what = std::string(" must be one of ") + kFormats;
  ExpectInvalid(R"({"version": "exllama"})",
                "quantization_config.version" + what + " (got \"exllama\")");
  ExpectInvalid(R"({"format": "ipex"})", "quantization_config.format" + what + " (got \"ipex\")");
  ExpectInvalid(R"({"checkpoint_format": "gptq"})",
                "quantization_config.checkpoint_format" + what + " (got \"gptq\")");
  ExpectInvalid(R"({"format": null})", "quantization_config.format must be a string (got null)");
  ExpectInvalid(R"({"version": 2})", "quantization_config.version must be a string (got 2)");
}

TEST(AwqConfigTest, BackendMustBeAnAwqBackend) {
  EXPECT_EQ(Parse(R"({"backend": "MARLIN"})").gptq.backend, "marlin");
  EXPECT_EQ(Parse(R"({"backend": "autoawq"})").gptq.backend, "auto");
  // Only the exact string maps to "auto" (before lower-casing); "AutoAWQ" stays "autoawq".
  EXPECT_EQ(Parse(R"({"backend": "AutoAWQ"})").gptq.backend, "autoawq");
  const std::string what = std::string("quantization_config.backend must be one of ") + kBackends;
  ExpectInvalid(R"({"backend": "ipex"})", what + " (got \"ipex\")");
  ExpectInvalid(R"({"backend": null})", what + " (got null)");
  ExpectInvalid(R"({"backend": 1})", what + " (got 1)");
}

TEST(AwqConfigTest, GptqValueRulesDoNotApply) {
  // AwqConfig.post_init replaces GPTQConfig's: no bits, group_size, damp_percent or dataset
  // checks, and no desc_act/act_group_aware interplay.
  AwqConfig c = Parse(
      R"({"bits": 7, "group_size": -5, "damp_percent": 5, "dataset": "pile", "desc_act": true})");
  EXPECT_EQ(c.gptq.bits, 7);
  EXPECT_EQ(c.gptq.group_size, -5);
  EXPECT_TRUE(c.gptq.act_group_aware);
  ExpectInvalid(R"({"bits": "4"})", "quantization_config.bits must be an integer (got \"4\")");
  ExpectInvalid(R"({"group_size": null})",
                "quantization_config.group_size must be an integer (got null)");
}

TEST(AwqConfigTest, ZeroPointIsABool) {
  EXPECT_FALSE(Parse(R"({"zero_point": false})").zero_point);
  ExpectInvalid(R"({"zero_point": 1})",
                "quantization_config.zero_point must be true or false (got 1)");
  ExpectInvalid(R"({"zero_point": null})",
                "quantization_config.zero_point must be true or false (got null)");
}

TEST(AwqConfigTest, ModulesToNotConvertIsAListOfNames) {
  AwqConfig c = Parse(R"({"modules_to_not_convert": ["lm_head", "model.layers.0"]})");
  ASSERT_TRUE(c.modules_to_not_convert.has_value());
  EXPECT_EQ(c.modules_to_not_convert->size(), 2u);
  EXPECT_FALSE(Parse(R"({"modules_to_not_convert": null})").modules_to_not_convert.has_value());
  ExpectInvalid(R"({"modules_to_not_convert": "lm_head"})",
                "quantization_config.modules_to_not_convert must be a list of module names (got "
                "\"lm_head\")");
}

}  // namespace
}  // namespace quantserve::quant

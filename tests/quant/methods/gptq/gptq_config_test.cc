#include "quant/methods/gptq/gptq_config.h"

#include <gtest/gtest.h>

namespace quantserve::quant {
namespace {

GptqConfig Parse(const std::string& json) {
  auto c = GptqConfig::Parse(json);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : GptqConfig{};
}

void ExpectInvalid(const std::string& json, const std::string& message) {
  auto c = GptqConfig::Parse(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_EQ(c.status().message(), message);
}

// Golden strings: json.dumps(GPTQConfig(**cfg).to_dict(), separators=(",", ":")) from the
// pinned transformers 5.23.
TEST(GptqConfigTest, DefaultsAndNormalizedJsonMatchTransformers) {
  GptqConfig c = Parse(R"({"quant_method": "gptq", "bits": 4})");
  EXPECT_EQ(c.bits, 4);
  EXPECT_EQ(c.group_size, 128);
  EXPECT_DOUBLE_EQ(c.damp_percent, 0.1);
  EXPECT_FALSE(c.desc_act);
  EXPECT_TRUE(c.act_group_aware);
  EXPECT_TRUE(c.sym);
  EXPECT_EQ(c.format, "gptq");
  EXPECT_EQ(c.backend, "auto");
  EXPECT_EQ(c.batch_size, 1);
  EXPECT_EQ(
      c.ToJson(),
      R"({"quant_method":"gptq","bits":4,"tokenizer":null,"dataset":null,"group_size":128,"damp_percent":0.1,"desc_act":false,"act_group_aware":true,"sym":true,"true_sequential":true,"format":"gptq","meta":null,"backend":"auto","model_seqlen":null,"block_name_to_quantize":null,"module_name_preceding_first_block":null,"batch_size":1,"pad_token_id":null,"max_input_length":null,"cache_block_outputs":true,"modules_in_block_to_quantize":null,"checkpoint_format":"gptq"})");
}

TEST(GptqConfigTest, FullConfigNormalizesLikeTransformers) {
  GptqConfig c = Parse(
      R"({"quant_method": "gptq", "bits": 8, "group_size": -1, "damp_percent": 0.01,
          "desc_act": true, "sym": false, "checkpoint_format": "GPTQ_V2", "backend": "Marlin",
          "dataset": "c4", "meta": {"quantizer": ["gptqmodel:2.0"]},
          "modules_in_block_to_quantize": [["self_attn.q_proj"], ["mlp.up_proj"]],
          "model_name_or_path": null, "static_groups": false})");
  EXPECT_EQ(
      c.ToJson(),
      R"({"quant_method":"gptq","bits":8,"tokenizer":null,"dataset":"c4","group_size":-1,"damp_percent":0.01,"desc_act":true,"act_group_aware":false,"sym":false,"true_sequential":true,"format":"gptq_v2","meta":{"quantizer":["gptqmodel:2.0"]},"backend":"marlin","model_seqlen":null,"block_name_to_quantize":null,"module_name_preceding_first_block":null,"batch_size":1,"pad_token_id":null,"max_input_length":null,"cache_block_outputs":true,"modules_in_block_to_quantize":[["self_attn.q_proj"],["mlp.up_proj"]],"checkpoint_format":"gptq_v2"})");
}

TEST(GptqConfigTest, NotAnObjectIsInvalid) {
  EXPECT_EQ(GptqConfig::Parse("[4]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GptqConfig::Parse("{").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GptqConfigTest, BitsIsRequired) {
  ExpectInvalid(R"({"quant_method": "gptq"})",
                "quantization_config.bits is required (one of 2, 3, 4, 8)");
}

TEST(GptqConfigTest, BitsMustBeTwoThreeFourOrEight) {
  for (int bits : {2, 3, 4, 8}) {
    EXPECT_EQ(Parse(R"({"bits": )" + std::to_string(bits) + "}").bits, bits);
  }
  ExpectInvalid(R"({"bits": 5})", "quantization_config.bits must be one of 2, 3, 4, 8 (got 5)");
  ExpectInvalid(R"({"bits": "4"})",
                "quantization_config.bits must be one of 2, 3, 4, 8 (got \"4\")");
  ExpectInvalid(R"({"bits": null})",
                "quantization_config.bits must be one of 2, 3, 4, 8 (got null)");
}

TEST(GptqConfigTest, GroupSizeIsMinusOneOrPositive) {
  EXPECT_EQ(Parse(R"({"bits": 4, "group_size": -1})").group_size, -1);
  EXPECT_EQ(Parse(R"({"bits": 4, "group_size": 32})").group_size, 32);
  const char* what = "-1 (per output channel) or greater than 0";
  ExpectInvalid(R"({"bits": 4, "group_size": 0})",
                std::string("quantization_config.group_size must be ") + what + " (got 0)");
  ExpectInvalid(R"({"bits": 4, "group_size": -2})",
                std::string("quantization_config.group_size must be ") + what + " (got -2)");
  ExpectInvalid(R"({"bits": 4, "group_size": 64.5})",
                "quantization_config.group_size must be an integer (got 64.5)");
  ExpectInvalid(R"({"bits": 4, "group_size": null})",
                "quantization_config.group_size must be an integer (got null)");
}

TEST(GptqConfigTest, DampPercentIsStrictlyBetweenZeroAndOne) {
  EXPECT_DOUBLE_EQ(Parse(R"({"bits": 4, "damp_percent": 0.5})").damp_percent, 0.5);
  for (const char* bad : {"0", "1", "1.5", "-0.1", "0.0"}) {
    ExpectInvalid(std::string(R"({"bits": 4, "damp_percent": )") + bad + "}",
                  std::string("quantization_config.damp_percent must be between 0 and 1, "
                              "exclusive (got ") +
                      bad + ")");
  }
  ExpectInvalid(R"({"bits": 4, "damp_percent": null})",
                "quantization_config.damp_percent must be a number (got null)");
}

TEST(GptqConfigTest, DatasetIsAListOfStringsOrAKnownName) {
  for (const char* name : {"wikitext2", "c4", "c4-new"}) {
    EXPECT_EQ(Parse(std::string(R"({"bits": 4, "dataset": ")") + name + "\"}").dataset, name);
  }
  EXPECT_EQ(Parse(R"({"bits": 4, "dataset": ["some text", "more"]})").dataset.size(), 2u);
  EXPECT_TRUE(Parse(R"({"bits": 4, "dataset": null})").dataset.is_null());
  const std::string what =
      "quantization_config.dataset must be a list of strings or one of \"wikitext2\", \"c4\", "
      "\"c4-new\"";
  ExpectInvalid(R"({"bits": 4, "dataset": "pile"})", what + " (got \"pile\")");
  ExpectInvalid(R"({"bits": 4, "dataset": {"a": 1}})", what + " (got {\"a\":1})");
  ExpectInvalid(R"({"bits": 4, "dataset": ["ok", 3]})", what + " (got [\"ok\",3])");
}

TEST(GptqConfigTest, DescActTurnsActGroupAwareOff) {
  GptqConfig c = Parse(R"({"bits": 4, "desc_act": true})");
  EXPECT_TRUE(c.desc_act);
  EXPECT_FALSE(c.act_group_aware);
  c = Parse(R"({"bits": 4, "desc_act": false, "act_group_aware": true})");
  EXPECT_TRUE(c.act_group_aware);
  c = Parse(R"({"bits": 4, "act_group_aware": false})");
  EXPECT_FALSE(c.act_group_aware);
}

TEST(GptqConfigTest, BooleanFieldsTakeOnlyBooleans) {
  for (const char* key :
       {"desc_act", "act_group_aware", "sym", "true_sequential", "cache_block_outputs"}) {
    ExpectInvalid(
        std::string(R"({"bits": 4, ")") + key + R"(": "yes"})",
        std::string("quantization_config.") + key + " must be true or false (got \"yes\")");
    ExpectInvalid(std::string(R"({"bits": 4, ")") + key + R"(": null})",
                  std::string("quantization_config.") + key + " must be true or false (got null)");
  }
  EXPECT_FALSE(Parse(R"({"bits": 4, "sym": false})").sym);
  EXPECT_FALSE(Parse(R"({"bits": 4, "true_sequential": false})").true_sequential);
  EXPECT_FALSE(Parse(R"({"bits": 4, "cache_block_outputs": false})").cache_block_outputs);
}

TEST(GptqConfigTest, FormatIsLowerCasedAndCheckpointFormatOverridesIt) {
  EXPECT_EQ(Parse(R"({"bits": 4, "format": "GPTQ_V2"})").format, "gptq_v2");
  EXPECT_EQ(Parse(R"({"bits": 4, "format": "gptq_v2", "checkpoint_format": "GPTQ"})").format,
            "gptq");
  // A null checkpoint_format is ignored, like transformers' `is not None` test.
  EXPECT_EQ(Parse(R"({"bits": 4, "format": "gptq_v2", "checkpoint_format": null})").format,
            "gptq_v2");
  // transformers 5.23 does not check the value.
  EXPECT_EQ(Parse(R"({"bits": 4, "format": "Marlin"})").format, "marlin");
  ExpectInvalid(R"({"bits": 4, "format": null})",
                "quantization_config.format must be a string (got null)");
  ExpectInvalid(R"({"bits": 4, "checkpoint_format": 2})",
                "quantization_config.checkpoint_format must be a string (got 2)");
}

TEST(GptqConfigTest, BackendIsLowerCasedAndDefaultsToAuto) {
  EXPECT_EQ(Parse(R"({"bits": 4, "backend": "ExLlama_V2"})").backend, "exllama_v2");
  EXPECT_EQ(Parse(R"({"bits": 4, "backend": null})").backend, "auto");
  ExpectInvalid(R"({"bits": 4, "backend": 1})",
                "quantization_config.backend must be a string (got 1)");
}

TEST(GptqConfigTest, MetaIsAnObjectOrNull) {
  EXPECT_EQ(Parse(R"({"bits": 4, "meta": {"damp_auto_increment": 0.0025}})").meta.size(), 1u);
  ExpectInvalid(R"({"bits": 4, "meta": "gptqmodel"})",
                "quantization_config.meta must be an object or null (got \"gptqmodel\")");
}

TEST(GptqConfigTest, ModulesInBlockToQuantizeIsAListOfLists) {
  GptqConfig c = Parse(
      R"({"bits": 4, "modules_in_block_to_quantize": [["self_attn.k_proj", "self_attn.v_proj"], ["mlp.down_proj"]]})");
  ASSERT_TRUE(c.modules_in_block_to_quantize.has_value());
  EXPECT_EQ(c.modules_in_block_to_quantize->size(), 2u);
  EXPECT_EQ((*c.modules_in_block_to_quantize)[0][1], "self_attn.v_proj");
  const std::string what =
      "quantization_config.modules_in_block_to_quantize must be a list of lists of module names "
      "(e.g. [[\"self_attn.q_proj\"]])";
  ExpectInvalid(R"({"bits": 4, "modules_in_block_to_quantize": ["self_attn.q_proj"]})",
                what + " (got [\"self_attn.q_proj\"])");
  ExpectInvalid(R"({"bits": 4, "modules_in_block_to_quantize": [[1]]})", what + " (got [[1]])");
}

TEST(GptqConfigTest, OptionalFieldsTakeTheirTypeOrNull) {
  GptqConfig c = Parse(
      R"({"bits": 4, "model_seqlen": 2048, "block_name_to_quantize": "model.layers",
          "module_name_preceding_first_block": ["model.embed_tokens"], "batch_size": 4,
          "pad_token_id": 0, "max_input_length": 4096, "tokenizer": "kjv-llama"})");
  EXPECT_EQ(c.model_seqlen, 2048);
  EXPECT_EQ(c.block_name_to_quantize, "model.layers");
  EXPECT_EQ(c.module_name_preceding_first_block->at(0), "model.embed_tokens");
  EXPECT_EQ(c.batch_size, 4);
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.max_input_length, 4096);
  EXPECT_EQ(c.tokenizer, "kjv-llama");
  c = Parse(R"({"bits": 4, "model_seqlen": null, "pad_token_id": null})");
  EXPECT_FALSE(c.model_seqlen.has_value());
  ExpectInvalid(R"({"bits": 4, "model_seqlen": "long"})",
                "quantization_config.model_seqlen must be an integer (got \"long\")");
  ExpectInvalid(R"({"bits": 4, "max_input_length": 1.5})",
                "quantization_config.max_input_length must be an integer (got 1.5)");
  ExpectInvalid(R"({"bits": 4, "block_name_to_quantize": ["model.layers"]})",
                "quantization_config.block_name_to_quantize must be a string (got "
                "[\"model.layers\"])");
  ExpectInvalid(R"({"bits": 4, "module_name_preceding_first_block": "model.embed_tokens"})",
                "quantization_config.module_name_preceding_first_block must be a list of module "
                "names (got \"model.embed_tokens\")");
  ExpectInvalid(R"({"bits": 4, "batch_size": null})",
                "quantization_config.batch_size must be an integer (got null)");
}

}  // namespace
}  // namespace quantserve::quant

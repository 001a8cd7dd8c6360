#include "models/model_config.h"

#include <gtest/gtest.h>

namespace quantserve::models {
namespace {

constexpr char kLlama[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1000,
  "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
  "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": false,
  "bos_token_id": 1, "eos_token_id": [2, 3], "torch_dtype": "bfloat16",
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}})";

TEST(ModelConfigTest, DeepNestingIsRefusedBeforeParsing) {
  const std::string deep = "{\"a\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  auto c = ParseModelConfig(deep, "");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(), "config.json: JSON nests 100001 levels deep (at most 64)");
}

TEST(ModelConfigTest, ParsesLlama) {
  auto c = ParseModelConfig(kLlama);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlamaForCausalLM);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_FALSE(c->attention_bias);
}

TEST(ModelConfigTest, GenerationConfigOverridesEos) {
  auto c = ParseModelConfig(kLlama, R"({"eos_token_id": 7, "bos_token_id": 5})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{7}));
  EXPECT_EQ(c->bos_token_id, 5);
}

TEST(ModelConfigTest, Qwen2HasQkvBiasButNoOutputBias) {
  auto c = ParseModelConfig(R"({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
      "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "sliding_window": 4, "use_sliding_window": false})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->sliding_window.has_value());
}

TEST(ModelConfigTest, MistralSlidingWindowIsKept) {
  auto c = ParseModelConfig(R"({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
      "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "sliding_window": 4})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 4);
}

TEST(ModelConfigTest, BertDefaults) {
  auto c = ParseModelConfig(R"({"architectures": ["BertModel"], "model_type": "bert",
      "vocab_size": 30522, "hidden_size": 384, "intermediate_size": 1536,
      "num_hidden_layers": 6, "num_attention_heads": 12, "hidden_act": "gelu",
      "max_position_embeddings": 512, "layer_norm_eps": 1e-12})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kBertModel);
  EXPECT_EQ(c->type_vocab_size, 2);
}

struct BadCase {
  const char* json;
  const char* field;
};

class ModelConfigErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ModelConfigErrorTest, NamesTheField) {
  auto c = ParseModelConfig(GetParam().json);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(GetParam().field), std::string::npos) << c.status();
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ModelConfigErrorTest,
    ::testing::Values(
        BadCase{"[1,2]", "JSON object"},
        BadCase{"{not json", "JSON object"},
        BadCase{R"({"architectures": ["GPT2LMHeadModel"]})", "architectures"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 0, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2})",
                "vocab_size"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": "x",
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2})",
                "hidden_size"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
            "num_key_value_heads": 3})",
                "num_key_value_heads"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})",
                "rope_scaling.rope_type"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})",
                "low_freq_factor"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "hidden_act": "gelu"})",
                "hidden_act"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "quantization_config": "gptq"})",
                "quantization_config"},
        // Numbers that would size a skeleton or a loop: refused before anything is built (a
        // million layers took two minutes of CPU to refuse; -1 positions loaded).
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1000000, "num_attention_heads": 2})",
                "'num_hidden_layers' is 1000000; at most 1024"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": -1})",
                "'max_position_embeddings' must be a positive integer"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 0})",
                "max_position_embeddings"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 9000000000,
            "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2})",
                "'vocab_size' is 9000000000"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "head_dim": 4096})",
                "head_dim"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "head_dim": -2})",
                "head_dim"},
        BadCase{R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 1e300})",
                "max_position_embeddings"}));

}  // namespace
}  // namespace quantserve::models

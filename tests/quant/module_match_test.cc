#include "quant/module_match.h"

#include <gtest/gtest.h>

#include <memory>

#include "models/layers.h"

namespace quantserve::quant {
namespace {

// Cases checked against transformers 5.23 quantizers_utils.should_convert_module.
TEST(MatchesSkipPatternTest, PrefixUpToAModuleBoundary) {
  EXPECT_TRUE(MatchesSkipPattern("model.layers.1.mlp.up_proj", "model.layers.1"));
  EXPECT_FALSE(MatchesSkipPattern("model.layers.11.mlp.up_proj", "model.layers.1"));
  EXPECT_TRUE(MatchesSkipPattern("lm_head", "lm_head"));
}

TEST(MatchesSkipPatternTest, RegexWithBoundary) {
  EXPECT_TRUE(MatchesSkipPattern("model.layers.11.self_attn.q_proj", "model.layers.*"));
  EXPECT_TRUE(MatchesSkipPattern("model.layers.3.mlp.gate_proj", R"(model\.layers\.[0-3])"));
  EXPECT_FALSE(MatchesSkipPattern("model.layers.4.mlp.gate_proj", R"(model\.layers\.[0-3])"));
  // The boundary stops "mlp.gate" from matching "mlp.gate_proj" (it is not a suffix either).
  EXPECT_FALSE(MatchesSkipPattern("model.layers.0.mlp.gate_proj", "model.layers.0.mlp.gate"));
}

TEST(MatchesSkipPatternTest, Suffix) {
  EXPECT_TRUE(MatchesSkipPattern("model.layers.0.mlp.down_proj", "down_proj"));
  EXPECT_TRUE(MatchesSkipPattern("model.layers.0.mlp.down_proj", "mlp.down_proj"));
  EXPECT_FALSE(MatchesSkipPattern("model.layers.0.mlp.down_proj", "mlp"));
}

TEST(MatchesSkipPatternTest, InvalidRegexIsLiteral) {
  EXPECT_TRUE(MatchesSkipPattern("a.b(c", "a.b(c"));
  EXPECT_FALSE(MatchesSkipPattern("a.b", "a.b(c"));
  EXPECT_TRUE(MatchesSkipPattern("a.b", ""));  // name.endswith("") is true in Python
}

TEST(HqqLinearTagTest, DropsModelLayersAndNumbers) {
  EXPECT_EQ(HqqLinearTag("model.layers.31.self_attn.k_proj"), "self_attn.k_proj");
  EXPECT_EQ(HqqLinearTag("model.layers.0.mlp.down_proj"), "mlp.down_proj");
  EXPECT_EQ(HqqLinearTag("lm_head"), "lm_head");
}

class TinyTree : public models::Module {
 public:
  explicit TinyTree(bool tied) {
    embed = std::make_shared<models::Embedding>(8, 4, c10::ScalarType::Float);
    proj = std::make_shared<models::DenseLinear>(models::LinearOptions{4, 4, true});
    head = std::make_shared<models::DenseLinear>(models::LinearOptions{4, 8, false});
    RegisterModule("embed_tokens", &embed);
    RegisterModule("proj", &proj);
    RegisterModule("lm_head", &head);
    if (tied) (void)head->MarkTied("weight", "embed_tokens.weight");
  }
  const char* type_name() const override { return "Tiny"; }
  std::shared_ptr<models::Embedding> embed;
  std::shared_ptr<models::DenseLinear> proj;
  std::shared_ptr<models::DenseLinear> head;
};

TEST(DefaultModulesToNotConvertTest, UntiedSkipsOutputEmbeddingAndLastParameter) {
  TinyTree tree(/*tied=*/false);
  EXPECT_EQ(DefaultModulesToNotConvert(tree), (std::vector<std::string>{"lm_head"}));
}

TEST(DefaultModulesToNotConvertTest, TiedSkipsBothEndsAndTheLastUntiedParameter) {
  TinyTree tree(/*tied=*/true);
  // named_parameters() drops the tied lm_head.weight, so the last parameter is proj.bias,
  // which transformers keeps with its ".bias" suffix (and so never matches a module).
  EXPECT_EQ(DefaultModulesToNotConvert(tree),
            (std::vector<std::string>{"lm_head", "embed_tokens", "proj.bias"}));
}

}  // namespace
}  // namespace quantserve::quant

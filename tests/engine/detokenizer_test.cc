// Streaming detokenization equals a one-shot decode, for every tokenizer family we load.

#include "engine/detokenizer.h"

#include <gtest/gtest.h>

#include "engine/text_stream.h"
#include "tests/testing/fixtures.h"

namespace quantserve::engine {
namespace {

class DetokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DetokenizerTest, StreamedDeltasConcatenateToTheDecodedText) {
  const std::string dir = quantserve::testing::FixturePath("tokenizers/" + GetParam());
  auto tokenizer = models::Tokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  nlohmann::json cases = quantserve::testing::ReadJsonFile(dir + "/cases.json");
  ASSERT_GT(cases.size(), 100u);
  int checked = 0;
  for (const auto& c : cases) {
    auto ids = c["ids"].get<std::vector<int32_t>>();
    Detokenizer detok(**tokenizer);
    TextStream stream({});
    std::string streamed;
    for (int32_t id : ids) streamed += stream.Push(detok.Push(id));
    streamed += stream.Flush();
    const std::string expected = (*tokenizer)->Decode(ids, /*skip_special_tokens=*/true);
    EXPECT_EQ(streamed, expected) << GetParam() << " case " << checked;
    if (streamed != expected) break;  // one report per tokenizer is enough
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(cases.size()));
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, DetokenizerTest,
                         ::testing::Values("minilm", "gpt2", "llama3", "qwen2"));

}  // namespace
}  // namespace quantserve::engine

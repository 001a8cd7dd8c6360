#include "server/request_validation.h"

#include <cmath>
#include <functional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quantserve::server {
namespace {

using ::testing::StartsWith;

v1::GenerateRequest ValidGenerate() {
  v1::GenerateRequest r;
  r.set_model("m");
  r.set_prompt("hello");
  return r;
}

TEST(ValidateGenerateRequestTest, AcceptsMinimalAndFullRequests) {
  RequestLimits limits;
  EXPECT_TRUE(ValidateGenerateRequest(ValidGenerate(), limits).ok());
  v1::GenerateRequest r = ValidGenerate();
  r.set_max_new_tokens(limits.max_new_tokens);
  r.mutable_sampling()->set_temperature(0.7f);
  r.mutable_sampling()->set_top_k(40);
  r.mutable_sampling()->set_top_p(1.0f);
  r.mutable_sampling()->set_repetition_penalty(1.1f);
  r.mutable_sampling()->set_seed(3);
  r.add_stop("\n\n");
  r.set_logprobs(5);
  EXPECT_TRUE(ValidateGenerateRequest(r, limits).ok());
  r.clear_prompt();
  r.add_input_ids(1);
  EXPECT_TRUE(ValidateGenerateRequest(r, limits).ok());
}

TEST(ValidateGenerateRequestTest, EachErrorNamesItsField) {
  RequestLimits limits;
  limits.max_new_tokens = 100;
  struct Case {
    std::string field;
    std::function<void(v1::GenerateRequest&)> mutate;
  };
  const Case kCases[] = {
      {"model: ", [](auto& r) { r.clear_model(); }},
      {"prompt: ", [](auto& r) { r.clear_prompt(); }},
      {"input_ids[1]: ",
       [](auto& r) {
         r.add_input_ids(5);
         r.add_input_ids(-1);
       }},
      {"max_new_tokens: ", [](auto& r) { r.set_max_new_tokens(0); }},
      {"max_new_tokens: ", [](auto& r) { r.set_max_new_tokens(101); }},
      {"sampling.temperature: ", [](auto& r) { r.mutable_sampling()->set_temperature(-0.1f); }},
      {"sampling.top_k: ", [](auto& r) { r.mutable_sampling()->set_top_k(-1); }},
      {"sampling.top_p: ", [](auto& r) { r.mutable_sampling()->set_top_p(0.0f); }},
      {"sampling.top_p: ", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }},
      {"sampling.repetition_penalty: ",
       [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0.0f); }},
      {"stop[0]: ", [](auto& r) { r.add_stop(""); }},
      {"stop: ",
       [](auto& r) {
         for (int i = 0; i < 17; ++i) r.add_stop("x");
       }},
      {"stop[1]: ",
       [](auto& r) {
         r.add_stop("x");
         r.add_stop(std::string(1025, 'x'));
       }},
      // Not-a-number and infinite sampling values are refused, not passed to the sampler.
      {"sampling.temperature: ",
       [](auto& r) { r.mutable_sampling()->set_temperature(std::nanf("")); }},
      {"sampling.temperature: ",
       [](auto& r) { r.mutable_sampling()->set_temperature(INFINITY); }},
      {"sampling.top_p: ", [](auto& r) { r.mutable_sampling()->set_top_p(std::nanf("")); }},
      {"sampling.repetition_penalty: ",
       [](auto& r) { r.mutable_sampling()->set_repetition_penalty(std::nanf("")); }},
      {"sampling.repetition_penalty: ",
       [](auto& r) { r.mutable_sampling()->set_repetition_penalty(INFINITY); }},
      {"logprobs: ", [](auto& r) { r.set_logprobs(-1); }},
      {"logprobs: ", [](auto& r) { r.set_logprobs(21); }},
  };
  for (const Case& c : kCases) {
    v1::GenerateRequest r = ValidGenerate();
    c.mutate(r);
    absl::Status s = ValidateGenerateRequest(r, limits);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(s.message()), StartsWith(c.field));
  }
}

TEST(ValidateEmbedRequestTest, LimitsCountBytesAndPooling) {
  RequestLimits limits;
  limits.max_embed_texts = 2;
  limits.max_embed_bytes = 10;
  v1::EmbedRequest r;
  r.set_model("m");
  EXPECT_THAT(std::string(ValidateEmbedRequest(r, limits).message()),
              StartsWith("texts: required"));
  r.add_texts("abc");
  EXPECT_TRUE(ValidateEmbedRequest(r, limits).ok());
  r.add_texts("abc");
  r.add_texts("abc");
  EXPECT_THAT(std::string(ValidateEmbedRequest(r, limits).message()),
              StartsWith("texts: at most 2 texts"));
  r.clear_texts();
  r.add_texts(std::string(11, 'x'));
  EXPECT_THAT(std::string(ValidateEmbedRequest(r, limits).message()),
              StartsWith("texts: at most 10 bytes"));
  r.clear_texts();
  r.add_texts("a");
  r.set_pooling("max");
  EXPECT_THAT(std::string(ValidateEmbedRequest(r, limits).message()), StartsWith("pooling: "));
  r.set_pooling("cls");
  r.clear_model();
  EXPECT_THAT(std::string(ValidateEmbedRequest(r, limits).message()), StartsWith("model: "));
}

TEST(ValidateScoreAndTokenizeTest, RequireModelAndInput) {
  v1::ScoreRequest score;
  score.set_model("m");
  EXPECT_THAT(std::string(ValidateScoreRequest(score).message()), StartsWith("text: "));
  score.set_text("hi");
  EXPECT_TRUE(ValidateScoreRequest(score).ok());
  v1::TokenizeRequest tokenize;
  EXPECT_THAT(std::string(ValidateTokenizeRequest(tokenize).message()), StartsWith("model: "));
  tokenize.set_model("m");
  EXPECT_TRUE(ValidateTokenizeRequest(tokenize).ok());
}

}  // namespace
}  // namespace quantserve::server

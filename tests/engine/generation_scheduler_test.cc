// Continuous batching on the default model (assets/models/kjv-llama, float32): requests join and
// leave the running batch between steps, each keeps its own sampling, the KV budget and queue
// limit refuse what cannot fit, cancellation frees the slot within a step, Score shares the
// batch, and deterministic mode reproduces solo runs bit for bit.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "engine/engine_api.h"
#include "tests/engine/engine_testing.h"
#include "tests/testing/fixtures.h"

namespace quantserve::engine {
namespace {

using quantserve::testing::FixturePath;
using testing::Collector;

std::unique_ptr<ServableModel> Load(LoadOptions options = {}) {
  options.name = "tiny";
  options.path = quantserve::testing::SourceDir() + "/assets/models/kjv-llama";
  options.dtype = "float32";
  auto model = LoadServableModel(options, nullptr);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// Eight different prompts of different lengths.
std::vector<GenerateParams> Requests(int n, int max_new) {
  const char* texts[] = {"In the beginning",
                         "And God said, Let there be light",
                         "The LORD is my shepherd; I shall not want.",
                         "Blessed are the meek",
                         "And it came to pass in those days, that there went out a decree",
                         "Jesus wept.",
                         "For God so loved the world",
                         "Vanity of vanities, saith the Preacher"};
  std::vector<GenerateParams> out;
  for (int i = 0; i < n; ++i) {
    GenerateParams p;
    p.prompt = texts[i % 8];
    p.max_new_tokens = max_new;
    p.ignore_eos = true;
    p.logprobs = 1;
    out.push_back(p);
  }
  return out;
}

std::vector<std::shared_ptr<Collector>> RunTogether(ServableModel& model,
                                                    const std::vector<GenerateParams>& requests) {
  std::vector<std::shared_ptr<Collector>> out;
  std::vector<std::unique_ptr<GenerationHandle>> handles;
  for (const auto& p : requests) {
    out.push_back(std::make_shared<Collector>());
    handles.push_back(model.Generate(p, out.back()));
  }
  for (auto& c : out) c->Wait();
  return out;
}

std::shared_ptr<Collector> RunAlone(ServableModel& model, const GenerateParams& p) {
  return RunTogether(model, {p})[0];
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

TEST(GenerationSchedulerTest, ConcurrentRequestsShareStepsAndMatchSoloRuns) {
  auto model = Load();
  ASSERT_NE(model, nullptr);
  const auto requests = Requests(8, 24);
  std::vector<std::shared_ptr<Collector>> solo;
  for (const auto& p : requests) solo.push_back(RunAlone(*model, p));
  const ServingStats before = model->Stats();
  auto together = RunTogether(*model, requests);
  const ServingStats after = model->Stats();

  // Solo: 24 steps per request. Together: the 8 requests decode in shared steps, so far
  // fewer steps than 8 x 24 run (the first few requests may start a step early).
  const int64_t steps = after.steps - before.steps;
  EXPECT_LE(steps, 24 + 8) << "requests did not share decode steps";
  EXPECT_GE(after.step_rows - before.step_rows, 8 * 23);
  float worst = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(together[i]->finish.ok()) << together[i]->finish.status();
    EXPECT_EQ(together[i]->finish->completion_tokens, 24);
    // Greedy tokens identical; logprobs equal up to float rounding of shared matmuls.
    EXPECT_EQ(together[i]->ids, solo[i]->ids) << "request " << i;
    worst = std::max(worst, MaxAbsDiff(together[i]->logprobs, solo[i]->logprobs));
  }
  EXPECT_LE(worst, 1e-4f);
  std::printf("batched vs solo: max |dlogprob| = %g over 8 x 24 tokens, %lld steps\n", worst,
              static_cast<long long>(steps));
  EXPECT_EQ(model->Stats().kv_cache_used_bytes, 0);
  EXPECT_EQ(model->Stats().running, 0);
}

TEST(GenerationSchedulerTest, DeterministicModeIsBitIdenticalToSoloRuns) {
  LoadOptions options;
  options.deterministic = true;
  auto model = Load(options);
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(model->description().deterministic);
  auto requests = Requests(6, 16);
  // Mixed sampling inside one batch: each request keeps its own parameters and generator.
  requests[1].sampling.temperature = 0.8f;
  requests[1].sampling.seed = 7;
  requests[3].sampling.temperature = 1.2f;
  requests[3].sampling.top_k = 20;
  requests[3].sampling.seed = 11;
  requests[4].sampling.top_p = 0.9f;
  requests[4].sampling.temperature = 1.0f;
  requests[4].sampling.seed = 3;
  requests[5].sampling.repetition_penalty = 1.3f;
  std::vector<std::shared_ptr<Collector>> solo;
  for (const auto& p : requests) solo.push_back(RunAlone(*model, p));
  auto together = RunTogether(*model, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(together[i]->finish.ok());
    EXPECT_EQ(together[i]->ids, solo[i]->ids) << "request " << i;
    EXPECT_EQ(together[i]->logprobs, solo[i]->logprobs) << "request " << i << " not bit-identical";
  }
  // The sampled requests really sampled (differ from greedy request 0's continuation rule).
  auto greedy = requests[1];
  greedy.sampling = {};
  EXPECT_NE(RunAlone(*model, greedy)->ids, together[1]->ids);
}

TEST(GenerationSchedulerTest, NewRequestsJoinARunningBatch) {
  auto model = Load();
  ASSERT_NE(model, nullptr);
  auto requests = Requests(2, 200);
  requests[1].max_new_tokens = 8;
  auto long_run = std::make_shared<Collector>();
  std::atomic<bool> long_done_before_short{false};
  auto short_run = std::make_shared<Collector>();
  std::atomic<int> long_tokens_when_short_done{-1};
  auto h1 = model->Generate(requests[0], long_run);
  while (long_run->tokens() < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto h2 = model->Generate(requests[1], short_run);
  short_run->Wait();
  long_tokens_when_short_done = static_cast<int>(long_run->tokens());
  long_done_before_short = long_run->done();
  long_run->Wait();
  ASSERT_TRUE(short_run->finish.ok());
  EXPECT_EQ(short_run->finish->completion_tokens, 8);
  // The short request ran alongside, not after, the long one.
  EXPECT_FALSE(long_done_before_short.load());
  EXPECT_LT(long_tokens_when_short_done.load(), 200);
  EXPECT_EQ(long_run->finish->completion_tokens, 200);
}

TEST(GenerationSchedulerTest, BatchSizeLimitHoldsAndTheRestWait) {
  LoadOptions options;
  options.max_batch_size = 2;
  auto model = Load(options);
  ASSERT_NE(model, nullptr);
  std::atomic<int> most_running{0};
  auto requests = Requests(5, 12);
  std::vector<std::shared_ptr<Collector>> cs;
  std::vector<std::unique_ptr<GenerationHandle>> hs;
  for (const auto& p : requests) {
    cs.push_back(std::make_shared<Collector>());
    cs.back()->on_chunk = [&](const GenerateChunk&) {
      int r = model->Stats().running;
      int prev = most_running.load();
      while (r > prev && !most_running.compare_exchange_weak(prev, r)) {
      }
    };
    hs.push_back(model->Generate(p, cs.back()));
  }
  for (auto& c : cs) {
    c->Wait();
    ASSERT_TRUE(c->finish.ok());
    EXPECT_EQ(c->finish->completion_tokens, 12);
  }
  EXPECT_EQ(most_running.load(), 2);
}

TEST(GenerationSchedulerTest, KvBudgetAndQueueLimitRefuseWithResourceExhausted) {
  LoadOptions probe_options;
  auto probe = Load(probe_options);
  ASSERT_NE(probe, nullptr);
  // The default budget covers max_batch_size full-context sequences.
  const int64_t per_token = probe->description().kv_cache_budget_bytes /
                            (32 * probe->description().max_position_embeddings);
  ASSERT_GT(per_token, 0);
  probe.reset();

  LoadOptions options;
  options.kv_cache_bytes = 100 * per_token;  // one 60-position sequence fits, two do not
  options.max_queued = 1;
  auto model = Load(options);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->description().kv_cache_budget_bytes, 100 * per_token);

  GenerateParams too_big = Requests(1, 200)[0];
  auto refused = RunAlone(*model, too_big);
  EXPECT_EQ(refused->finish.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused->finish.status().message().find("KV cache"), std::string::npos)
      << refused->finish.status();

  // Two that fit one at a time: the second waits for the first's cache, a third finds the
  // queue (limit 1) full.
  auto requests = Requests(3, 56);
  std::vector<std::shared_ptr<Collector>> cs;
  std::vector<std::unique_ptr<GenerationHandle>> hs;
  std::atomic<int> most_running{0};
  for (size_t i = 0; i < requests.size(); ++i) {
    cs.push_back(std::make_shared<Collector>());
    cs.back()->on_chunk = [&](const GenerateChunk&) {
      most_running = std::max(most_running.load(), model->Stats().running);
    };
    hs.push_back(model->Generate(requests[i], cs.back()));
    // Let the first one start, so the second is the one waiting in the queue.
    while (i == 0 && cs[0]->tokens() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto& c : cs) c->Wait();
  int ok = 0, exhausted = 0;
  for (auto& c : cs) {
    if (c->finish.ok()) ++ok;
    if (c->finish.status().code() == absl::StatusCode::kResourceExhausted) ++exhausted;
  }
  EXPECT_EQ(ok, 2);
  EXPECT_EQ(exhausted, 1);
  EXPECT_EQ(cs[2]->finish.status().code(), absl::StatusCode::kResourceExhausted)
      << cs[2]->finish.status();
  EXPECT_EQ(most_running.load(), 1);
  EXPECT_EQ(model->Stats().kv_cache_used_bytes, 0);
}

TEST(GenerationSchedulerTest, CancelFreesTheSlotWithinOneStep) {
  auto model = Load();
  ASSERT_NE(model, nullptr);
  auto p = Requests(1, 400)[0];
  auto c = std::make_shared<Collector>();
  std::atomic<int> at_cancel{-1};
  std::unique_ptr<GenerationHandle> handle;
  std::mutex mu;
  c->on_chunk = [&](const GenerateChunk&) {
    std::lock_guard<std::mutex> lock(mu);
    if (at_cancel < 0 && handle != nullptr) {
      at_cancel = 1;
      handle->Cancel();
    }
  };
  {
    std::lock_guard<std::mutex> lock(mu);
    handle = model->Generate(p, c);
  }
  c->Wait();
  ASSERT_TRUE(c->finish.ok());
  EXPECT_EQ(c->finish->reason, FinishReason::kCancelled);
  // Cancelled during the chunk callback of step k: no further token is produced.
  EXPECT_LE(c->finish->completion_tokens, 2);
  EXPECT_EQ(model->Stats().kv_cache_used_bytes, 0);
  EXPECT_EQ(model->Stats().running, 0);
}

TEST(GenerationSchedulerTest, ScoreRunsInTheBatchAndMatchesASoloScore) {
  auto model = Load();
  ASSERT_NE(model, nullptr);
  ScoreParams sp;
  sp.text = "And God saw the light, that it was good: and God divided the light from the darkness.";
  auto solo = model->Score(sp);
  ASSERT_TRUE(solo.ok()) << solo.status();
  auto running = Requests(4, 64);
  std::vector<std::shared_ptr<Collector>> cs;
  std::vector<std::unique_ptr<GenerationHandle>> hs;
  for (const auto& p : running) {
    cs.push_back(std::make_shared<Collector>());
    hs.push_back(model->Generate(p, cs.back()));
  }
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<ScoreResult>> scores(4, absl::UnknownError("unset"));
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { scores[i] = model->Score(sp); });
  for (auto& t : threads) t.join();
  for (auto& c : cs) c->Wait();
  for (const auto& s : scores) {
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->token_ids, solo->token_ids);
    EXPECT_LE(MaxAbsDiff(s->logprobs, solo->logprobs), 1e-4f);
    EXPECT_NEAR(s->perplexity, solo->perplexity, 1e-3 * solo->perplexity);
  }
  ScoreParams one;
  one.input_ids = {5};
  EXPECT_EQ(model->Score(one).status().code(), absl::StatusCode::kInvalidArgument);
}

// A prompt longer than max_prefill_tokens is prefilled in chunks over several steps: its
// tokens and logprobs equal an unchunked run's, a stream already decoding gets a token in
// every one of those steps, and a Score over chunks equals an unchunked Score.
TEST(GenerationSchedulerTest, LongPromptsPrefillInChunksWithoutStallingOthers) {
  auto whole = Load();
  ASSERT_NE(whole, nullptr);
  LoadOptions options;
  options.max_prefill_tokens = 8;
  auto chunked = Load(options);
  ASSERT_NE(chunked, nullptr);
  GenerateParams long_prompt = Requests(5, 12)[4];  // "And it came to pass in those days, ..."
  long_prompt.prompt = long_prompt.prompt + ", that all the world should be taxed.";
  const auto ref = RunAlone(*whole, long_prompt);
  const auto solo = RunAlone(*chunked, long_prompt);
  ASSERT_TRUE(ref->finish.ok() && solo->finish.ok());
  ASSERT_GT(ref->finish->prompt_tokens, 16);  // at least three chunks of 8
  EXPECT_EQ(solo->ids, ref->ids);
  EXPECT_LE(MaxAbsDiff(solo->logprobs, ref->logprobs), 1e-4f);

  // A stream decoding while the long prompt arrives keeps getting one token per step.
  GenerateParams runner = Requests(1, 40)[0];
  auto runner_c = std::make_shared<Collector>();
  auto runner_h = chunked->Generate(runner, runner_c);
  while (runner_c->tokens() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const ServingStats before = chunked->Stats();
  auto late = RunAlone(*chunked, long_prompt);
  const ServingStats after = chunked->Stats();
  runner_c->Wait();
  ASSERT_TRUE(late->finish.ok() && runner_c->finish.ok());
  EXPECT_EQ(late->ids, ref->ids);
  // Every step of the late request ran at most one 8-token chunk next to the runner's row.
  const int64_t steps = after.steps - before.steps;
  const int64_t chunks = (late->finish->prompt_tokens + 7) / 8;
  EXPECT_GE(steps, chunks + 11);
  EXPECT_LE(after.step_rows - before.step_rows, late->finish->prompt_tokens + 11 + 2 * steps);

  ScoreParams sp;
  sp.text = long_prompt.prompt;
  auto score_ref = whole->Score(sp);
  auto score = chunked->Score(sp);
  ASSERT_TRUE(score_ref.ok() && score.ok());
  EXPECT_EQ(score->token_ids, score_ref->token_ids);
  EXPECT_LE(MaxAbsDiff(score->logprobs, score_ref->logprobs), 1e-4f);
  EXPECT_NEAR(score->perplexity, score_ref->perplexity, 1e-4 * score_ref->perplexity);
  EXPECT_EQ(chunked->Stats().kv_cache_used_bytes, 0);
}

TEST(GenerationSchedulerTest, ShutdownFinishesRunningWorkThenRefuses) {
  auto model = Load();
  ASSERT_NE(model, nullptr);
  auto cs = std::vector<std::shared_ptr<Collector>>{std::make_shared<Collector>()};
  auto h = model->Generate(Requests(1, 20)[0], cs[0]);
  model->Shutdown();
  ASSERT_TRUE(cs[0]->done());
  ASSERT_TRUE(cs[0]->finish.ok());
  EXPECT_EQ(cs[0]->finish->completion_tokens, 20);
  auto late = RunAlone(*model, Requests(1, 4)[0]);
  EXPECT_EQ(late->finish.status().code(), absl::StatusCode::kUnavailable);
}

TEST(EmbedBatcherTest, ConcurrentEmbedsBatchAndMatchSequentialOnes) {
  LoadOptions options;
  options.name = "minilm";
  options.path = FixturePath("minilm");
  options.dtype = "float32";
  auto loaded = LoadServableModel(options, nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ServableModel& model = **loaded;
  const std::vector<std::string> texts = {
      "In the beginning God created the heaven and the earth.",
      "Jesus wept.",
      "The LORD is my shepherd; I shall not want. He maketh me to lie down in green pastures.",
      "Blessed are the meek: for they shall inherit the earth.",
      "Vanity of vanities",
      "And the evening and the morning were the first day.",
      "Let there be light",
      "A soft answer turneth away wrath: but grievous words stir up anger."};
  std::vector<std::vector<float>> sequential;
  for (const auto& t : texts) {
    EmbedParams p;
    p.texts = {t};
    auto r = model.Embed(p);
    ASSERT_TRUE(r.ok()) << r.status();
    sequential.push_back(r->embeddings[0]);
  }
  const ServingStats before = model.Stats();
  std::vector<absl::StatusOr<EmbedResult>> results(texts.size(), absl::UnknownError("unset"));
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < texts.size(); ++i) {
      threads.emplace_back([&, i] {
        EmbedParams p;
        p.texts = {texts[i]};
        results[i] = model.Embed(p);
      });
    }
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < texts.size(); ++i) {
      ASSERT_TRUE(results[i].ok()) << results[i].status();
      EXPECT_LE(MaxAbsDiff(results[i]->embeddings[0], sequential[i]), 1e-5f) << "text " << i;
    }
  }
  const ServingStats after = model.Stats();
  EXPECT_EQ(after.step_rows - before.step_rows, 3 * 8);
  // 24 concurrent calls ran in fewer forwards than calls (the first of each round may run
  // alone while the others are still arriving).
  EXPECT_LT(after.steps - before.steps, 24);
  std::printf("24 embed calls ran in %lld forwards\n",
              static_cast<long long>(after.steps - before.steps));

  // One request with many texts of mixed lengths, padded together: same vectors.
  EmbedParams all;
  all.texts = texts;
  auto batched = model.Embed(all);
  ASSERT_TRUE(batched.ok());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_LE(MaxAbsDiff(batched->embeddings[i], sequential[i]), 1e-5f) << "text " << i;
  }
}

}  // namespace
}  // namespace quantserve::engine

#include "tests/server/fake_model.h"

#include <atomic>
#include <cmath>
#include <filesystem>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/load_request.h"

namespace quantserve::server::testing {

std::vector<float> FakeDistribution(const std::string& quant_method) {
  const double sharpness = quant_method == "none" ? 1.0 : 0.8;
  std::vector<double> logits(kFakeVocab);
  double max = -1e30;
  for (int j = 0; j < kFakeVocab; ++j) {
    logits[j] = sharpness * ((j * 37) % 11) / 3.0;
    max = std::max(max, logits[j]);
  }
  double sum = 0;
  for (double l : logits) sum += std::exp(l - max);
  std::vector<float> row(kFakeVocab);
  for (int j = 0; j < kFakeVocab; ++j) row[j] = static_cast<float>(logits[j] - max - std::log(sum));
  return row;
}

namespace {

bool FakeStats_Unblocked(FakeStats* stats) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  return stats->unblocked;
}

struct GenerationState {
  absl::Mutex mu;
  bool cancelled ABSL_GUARDED_BY(mu) = false;
};

class FakeGenerationHandle final : public engine::GenerationHandle {
 public:
  FakeGenerationHandle(std::shared_ptr<GenerationState> state, std::shared_ptr<FakeStats> stats)
      : state_(std::move(state)), stats_(std::move(stats)) {}
  void Cancel() override {
    absl::MutexLock lock(&state_->mu);
    if (!state_->cancelled) {
      state_->cancelled = true;
      ++stats_->cancels;
    }
  }

 private:
  std::shared_ptr<GenerationState> state_;
  std::shared_ptr<FakeStats> stats_;
};

// Waits until the request is cancelled (returns true) or "[block]" is released (false).
bool WaitWhileBlocked(FakeStats& stats, GenerationState* state) {
  ++stats.blocked;
  bool cancelled = false;
  while (true) {
    if (state != nullptr) {
      absl::MutexLock lock(&state->mu);
      if (state->cancelled) {
        cancelled = true;
        break;
      }
    }
    {
      absl::MutexLock lock(&stats.mu);
      if (stats.mu.AwaitWithTimeout(absl::Condition(&FakeStats_Unblocked, &stats),
                                    absl::Milliseconds(5))) {
        break;
      }
    }
  }
  --stats.blocked;
  return cancelled;
}

class FakeModel final : public engine::ServableModel {
 public:
  FakeModel(engine::ModelDescription description, std::shared_ptr<FakeStats> stats)
      : description_(std::move(description)), stats_(std::move(stats)) {}

  ~FakeModel() override { JoinThreads(); }

  const engine::ModelDescription& description() const override { return description_; }

  // A fixed quarter of a 4 MiB KV budget in use, for the usage gauges.
  engine::ServingStats Stats() const override {
    return {.kv_cache_used_bytes = 1 << 20, .kv_cache_budget_bytes = 4 << 20};
  }

  std::unique_ptr<engine::GenerationHandle> Generate(
      engine::GenerateParams params, std::shared_ptr<engine::GenerateObserver> observer) override {
    auto state = std::make_shared<GenerationState>();
    {
      absl::MutexLock lock(&mu_);
      if (shut_down_) {
        observer->OnFinish(absl::UnavailableError("fake model is shut down"));
        return nullptr;
      }
      ++stats_->generations;
      // Finished generations are joined as new ones start, so a long test (the churn test
      // measures the resident set) does not keep every finished thread's stack.
      for (size_t i = 0; i < threads_.size();) {
        if (threads_[i].done->load()) {
          threads_[i].thread.join();
          threads_[i] = std::move(threads_.back());
          threads_.pop_back();
        } else {
          ++i;
        }
      }
      auto done = std::make_shared<std::atomic<bool>>(false);
      threads_.push_back(
          {std::thread([params = std::move(params), observer = std::move(observer), state,
                        stats = stats_, done]() mutable {
             Run(std::move(params), std::move(observer), *state, *stats);
             done->store(true);
           }),
           done});
    }
    return std::make_unique<FakeGenerationHandle>(state, stats_);
  }

  absl::StatusOr<engine::EmbedResult> Embed(const engine::EmbedParams& params) override {
    engine::EmbedResult result;
    for (const std::string& text : params.texts) {
      if (absl::StrContains(text, "[block]")) {
        WaitWhileBlocked(*stats_, nullptr);
      }
      std::vector<float> v = {static_cast<float>(text.size()), 1.0f, 0.0f};
      if (params.normalize) {
        float norm = std::sqrt(v[0] * v[0] + v[1] * v[1]);
        for (float& x : v) {
          x /= norm;
        }
      }
      result.embeddings.push_back(std::move(v));
      result.prompt_tokens += static_cast<int32_t>(text.size());
    }
    return result;
  }

  absl::StatusOr<engine::ScoreResult> Score(const engine::ScoreParams& params) override {
    engine::ScoreResult result;
    if (!params.input_ids.empty()) {
      result.token_ids = params.input_ids;
    } else {
      for (unsigned char c : params.text) {
        result.token_ids.push_back(c);
      }
    }
    result.logprobs.assign(result.token_ids.empty() ? 0 : result.token_ids.size() - 1, -1.0f);
    result.perplexity = std::exp(1.0);
    if (params.full_distributions && result.token_ids.size() >= 2) {
      // FakeDistribution's rows: the same for every position, sharper when unquantized.
      const std::vector<float> row = FakeDistribution(description_.quant_method);
      result.vocab = static_cast<int64_t>(row.size());
      for (size_t i = 0; i + 1 < result.token_ids.size(); ++i) {
        result.distributions.insert(result.distributions.end(), row.begin(), row.end());
      }
    }
    return result;
  }

  absl::StatusOr<engine::TokenizeResult> Tokenize(std::string_view text,
                                                  bool add_special_tokens) override {
    engine::TokenizeResult result;
    if (add_special_tokens) {
      result.token_ids.push_back(1);
      result.tokens.push_back("<s>");
    }
    for (char c : text) {
      result.token_ids.push_back(static_cast<unsigned char>(c));
      result.tokens.push_back(std::string(1, c));
    }
    return result;
  }

  void Shutdown() override {
    {
      absl::MutexLock lock(&mu_);
      if (shut_down_) {
        return;
      }
      shut_down_ = true;
    }
    ++stats_->shutdowns;
    JoinThreads();
  }

 private:
  static void Run(engine::GenerateParams params, std::shared_ptr<engine::GenerateObserver> observer,
                  GenerationState& state, FakeStats& stats) {
    const absl::Time start = absl::Now();
    const int32_t prompt_tokens = static_cast<int32_t>(
        params.input_ids.empty() ? params.prompt.size() : params.input_ids.size());
    const bool block = absl::StrContains(params.prompt, "[block]");
    const bool eos = absl::StrContains(params.prompt, "[eos]");
    engine::GenerateFinish finish;
    finish.prompt_tokens = prompt_tokens;
    finish.reason = engine::FinishReason::kLength;
    for (int32_t i = 0; i < params.max_new_tokens; ++i) {
      {
        absl::MutexLock lock(&state.mu);
        if (state.cancelled) {
          finish.reason = engine::FinishReason::kCancelled;
          break;
        }
      }
      if (eos && i == 2) {
        finish.reason = engine::FinishReason::kEos;
        break;
      }
      if (stats.token_delay > absl::ZeroDuration()) {
        absl::SleepFor(stats.token_delay);
      }
      engine::GenerateChunk chunk;
      chunk.token_ids.push_back(1000 + prompt_tokens + i);
      chunk.text = absl::StrCat("t", i, " ");
      if (params.logprobs >= 1) {
        chunk.logprobs.push_back(-0.5f);
      }
      if (params.logprobs > 1) {
        chunk.top_logprobs.push_back({{1000 + prompt_tokens + i, -0.5f}, {7, -2.0f}});
      }
      observer->OnChunk(std::move(chunk));
      ++finish.completion_tokens;
      if (block && i == 0 && WaitWhileBlocked(stats, &state)) {
        finish.reason = engine::FinishReason::kCancelled;
        break;
      }
    }
    finish.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    observer->OnFinish(finish);
    observer.reset();  // the engine lets go of the observer once it has finished
  }

  void JoinThreads() {
    std::vector<Worker> threads;
    {
      absl::MutexLock lock(&mu_);
      threads.swap(threads_);
    }
    for (Worker& t : threads) {
      t.thread.join();
    }
  }

  const engine::ModelDescription description_;
  const std::shared_ptr<FakeStats> stats_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> threads_ ABSL_GUARDED_BY(mu_);
};

bool LoadsReleased(FakeStats* stats) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  return stats->loads_released;
}

}  // namespace

bool FakeStats::WaitForBlocked(int n, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (blocked.load() < n) {
    if (absl::Now() > deadline) {
      return false;
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

ModelLoader MakeFakeLoader(std::shared_ptr<FakeStats> stats) {
  return [stats](const engine::LoadOptions& options, const engine::LoadProgressCallback& progress)
             -> absl::StatusOr<std::unique_ptr<engine::ServableModel>> {
    ++stats->loads;
    {
      absl::MutexLock lock(&stats->mu);
      stats->last_calibration_texts = options.calibration_texts;
    }
    const std::string dir = std::filesystem::path(options.path).filename().string();
    progress({.phase = "config"});
    if (absl::StartsWith(dir, "broken")) {
      return absl::DataLossError("model.safetensors: tensor 'lm_head.weight' is truncated");
    }
    progress({.phase = "quantizer"});
    progress({.phase = "skeleton"});
    constexpr int64_t kTensors = 4;
    constexpr int64_t kTensorBytes = 1 << 20;
    for (int64_t i = 0; i <= kTensors; ++i) {
      progress({.phase = "weights",
                .tensors_done = i,
                .tensors_total = kTensors,
                .bytes_done = i * kTensorBytes,
                .bytes_total = kTensors * kTensorBytes});
      if (i == 1 && absl::StartsWith(dir, "slow")) {
        absl::MutexLock lock(&stats->mu);
        stats->mu.Await(absl::Condition(&LoadsReleased, stats.get()));
      }
    }
    progress({.phase = "post_process", .tensors_done = kTensors, .tensors_total = kTensors});
    engine::ModelDescription d;
    const bool embed = absl::StartsWith(dir, "embed");
    d.architecture = embed ? "BertModel" : "FakeForCausalLM";
    d.task = embed ? engine::Task::kEmbed : engine::Task::kGenerate;
    std::string method = RequestedQuantMethod(options.quantization_config_json);
    d.quant_method = method.empty() ? "none" : method;
    d.quantization_config_json = options.quantization_config_json;
    d.dtype = options.dtype == "auto" ? "float32" : options.dtype;
    d.device = options.device_map == "auto" ? "cpu" : options.device_map;
    d.memory_footprint_bytes = kTensors * kTensorBytes;
    d.parameters = kTensors * kTensorBytes / 4;
    d.vocab_size = 32000;
    d.max_position_embeddings = 2048;
    d.peak_load_memory_bytes = kTensors * kTensorBytes + kTensorBytes;
    d.default_pooling = embed ? "mean" : "";
    d.tokenizer_fingerprint = embed ? "fake-bert-vocab" : "fake-llama-vocab";
    d.kernels = {{d.quant_method == "none" ? "aten_linear" : "fake_quantized_linear", 7}};
    progress({.phase = "ready", .tensors_done = kTensors, .tensors_total = kTensors});
    return std::make_unique<FakeModel>(std::move(d), stats);
  };
}

}  // namespace quantserve::server::testing

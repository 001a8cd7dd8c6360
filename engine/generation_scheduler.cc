#include "engine/generation_scheduler.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/torch_status.h"
#include "engine/detokenizer.h"
#include "engine/sampler.h"
#include "engine/text_stream.h"

namespace quantserve::engine {

// One request's state from submission to retirement. Fields below `cache` are touched by
// the scheduler thread only.
struct GenerationScheduler::Sequence {
  // Set at submission.
  std::vector<int32_t> prompt;
  int64_t max_new = 0;
  int64_t kv_bytes = 0;  // reserved while running
  std::chrono::steady_clock::time_point start;
  std::atomic<bool> cancelled{false};
  // Generate requests.
  GenerateParams params;
  std::shared_ptr<GenerateObserver> observer;
  // Score requests (prefill only); the result goes to `scored`.
  bool score = false;
  bool full_distributions = false;  // Score: also keep every row's log-softmax
  std::promise<absl::StatusOr<ScoreResult>> scored;

  std::optional<models::KvCache> cache;
  std::optional<Sampler> sampler;
  std::optional<TextStream> stream;
  std::optional<Detokenizer> detokenizer;
  std::vector<int32_t> history;
  int32_t next_token = -1;  // to feed on the next step; -1 = prefill pending
  // Prompt tokens already in the cache: a prompt longer than max_prefill_tokens is prefilled
  // in chunks of that size over several steps, so running streams keep getting tokens.
  int64_t prefilled = 0;
  std::vector<at::Tensor> score_hidden;  // Score: hidden rows of the chunks prefilled so far
  GenerateFinish finish;
  bool done = false;
};

namespace {

class Handle final : public GenerationHandle {
 public:
  explicit Handle(std::weak_ptr<std::atomic<bool>> flag) : flag_(std::move(flag)) {}
  void Cancel() override {
    if (auto f = flag_.lock()) f->store(true);
  }

 private:
  std::weak_ptr<std::atomic<bool>> flag_;
};

class NoopHandle final : public GenerationHandle {
 public:
  void Cancel() override {}
};

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string Bytes(int64_t n) {
  return n >= (1 << 20) ? absl::StrCat(n >> 20, " MiB") : absl::StrCat(n, " bytes");
}

}  // namespace

GenerationScheduler::GenerationScheduler(Options options) : options_(std::move(options)) {
  kv_per_token_ = options_.model->KvBytesPerToken();
  kv_budget_ = options_.kv_cache_bytes > 0
                   ? options_.kv_cache_bytes
                   : kv_per_token_ * options_.context_length * options_.max_batch_size;
  thread_ = std::thread([this] { Loop(); });
}

GenerationScheduler::~GenerationScheduler() { Shutdown(); }

// Checks and tokenizes on the caller's thread (so the step loop never stalls on a long
// prompt), then queues. Errors are returned; the caller finishes the request with them.
absl::Status GenerationScheduler::Submit(std::shared_ptr<Sequence> seq) {
  const int64_t vocab = options_.model->config().vocab_size;
  const char* field = seq->score ? "text" : "prompt";
  if (seq->prompt.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": empty (no tokens to condition on)"));
  }
  for (int32_t id : seq->prompt) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("input_ids: token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  const int64_t n = static_cast<int64_t>(seq->prompt.size());
  const int64_t context = options_.context_length;
  if (seq->score) {
    if (n < 2) {
      return absl::InvalidArgumentError(
          "text: needs at least 2 tokens to score (each token is scored given its prefix)");
    }
    if (n > context) {
      return absl::InvalidArgumentError(
          absl::StrCat("text: ", n, " tokens exceed the model's context of ", context));
    }
    seq->max_new = 0;
  } else {
    if (n >= context) {
      return absl::InvalidArgumentError(absl::StrCat("prompt: ", n,
                                                     " tokens leave no room in the model's context of ",
                                                     context, " tokens"));
    }
    if (seq->params.max_new_tokens < 1) {
      return absl::InvalidArgumentError(absl::StrCat("max_new_tokens: must be >= 1, got ",
                                                     seq->params.max_new_tokens));
    }
    seq->max_new = std::min<int64_t>(seq->params.max_new_tokens, context - n);
  }
  seq->kv_bytes = (n + seq->max_new) * kv_per_token_;
  if (seq->kv_bytes > kv_budget_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs ", Bytes(seq->kv_bytes), " of KV cache (", n + seq->max_new,
        " positions) but the model's KV cache budget is ", Bytes(kv_budget_),
        "; shorten the prompt or max_new_tokens, or raise --kv_cache_memory"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("model is shutting down");
    if (static_cast<int32_t>(queue_.size()) >= options_.max_queued) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "generation queue is full (", options_.max_queued, " waiting); retry later"));
    }
    queue_.push_back(std::move(seq));
  }
  cv_.notify_one();
  return absl::OkStatus();
}

std::unique_ptr<GenerationHandle> GenerationScheduler::Generate(
    GenerateParams params, std::shared_ptr<GenerateObserver> observer) {
  auto seq = std::make_shared<Sequence>();
  seq->start = std::chrono::steady_clock::now();
  seq->params = std::move(params);
  seq->observer = std::move(observer);
  seq->prompt = seq->params.input_ids;
  absl::Status status = common::TorchCall("tokenize", [&] {
    if (seq->prompt.empty()) {
      seq->prompt = options_.tokenizer->Encode(seq->params.prompt, /*add_special_tokens=*/true);
    }
  });
  // The handle holds the flag through an aliasing pointer, so it never extends the request.
  std::shared_ptr<std::atomic<bool>> flag(seq, &seq->cancelled);
  std::shared_ptr<GenerateObserver> observer_ref = seq->observer;
  if (status.ok()) status = Submit(std::move(seq));
  if (!status.ok()) {
    observer_ref->OnFinish(status);  // outside the lock: observers may call back in
    return std::make_unique<NoopHandle>();
  }
  return std::make_unique<Handle>(flag);
}

absl::StatusOr<ScoreResult> GenerationScheduler::Score(const ScoreParams& params) {
  auto seq = std::make_shared<Sequence>();
  seq->start = std::chrono::steady_clock::now();
  seq->score = true;
  seq->full_distributions = params.full_distributions;
  seq->prompt = params.input_ids;
  if (seq->prompt.empty()) {
    absl::Status status = common::TorchCall("tokenize", [&] {
      seq->prompt = options_.tokenizer->Encode(params.text, params.add_special_tokens);
    });
    if (!status.ok()) return status;
  }
  std::future<absl::StatusOr<ScoreResult>> result = seq->scored.get_future();
  if (absl::Status status = Submit(seq); !status.ok()) return status;
  return result.get();
}

ServingStats GenerationScheduler::Stats() const {
  ServingStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.waiting = static_cast<int32_t>(queue_.size());
  }
  s.running = running_count_.load();
  s.kv_cache_used_bytes = kv_used_.load();
  s.kv_cache_budget_bytes = kv_budget_;
  s.steps = steps_.load();
  s.step_rows = step_rows_.load();
  return s;
}

void GenerationScheduler::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void GenerationScheduler::Loop() {
  if (options_.num_threads > 0) at::set_num_threads(options_.num_threads);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty() || !running_.empty(); });
      if (stopping_ && queue_.empty() && running_.empty()) return;  // drained
    }
    // Anything thrown outside the torch boundary fails the batch, not the process.
    try {
      Step();
    } catch (const std::exception& e) {
      QS_LOG(ERROR) << "generation step failed" << common::Kv("error", e.what());
      for (auto& seq : running_) {
        Retire(*seq, absl::InternalError(std::string("generation failed: ") + e.what()));
      }
      running_.clear();
    }
  }
}

void GenerationScheduler::Retire(Sequence& seq, absl::StatusOr<GenerateFinish> finish) {
  if (seq.done) return;
  seq.done = true;
  if (seq.cache.has_value()) {  // it was running: counted in before the observer hears
    seq.cache.reset();
    kv_used_.fetch_sub(seq.kv_bytes);
    running_count_.fetch_sub(1);
  }
  if (seq.score) {
    if (!finish.ok()) seq.scored.set_value(finish.status());
    // A successful score already set its value.
    return;
  }
  if (finish.ok()) {
    finish->seconds = SecondsSince(seq.start);
    if (seq.stream.has_value()) finish->text += seq.stream->Flush();
  } else {
    QS_LOG(ERROR) << "generation failed" << common::Kv("error", finish.status().ToString());
  }
  seq.observer->OnFinish(std::move(finish));
}

void GenerationScheduler::Admit() {
  int64_t prefill_tokens = 0;
  for (;;) {
    std::shared_ptr<Sequence> seq;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty()) return;
      // Cancelled while queued: leave now, without a cache.
      if (queue_.front()->cancelled.load()) {
        seq = std::move(queue_.front());
        queue_.pop_front();
      } else {
        const Sequence& head = *queue_.front();
        const int64_t n = static_cast<int64_t>(head.prompt.size());
        const bool batch_full = static_cast<int32_t>(running_.size()) >= options_.max_batch_size;
        const int64_t chunk = std::min(n, options_.max_prefill_tokens);
        const bool prefill_full =
            prefill_tokens > 0 && prefill_tokens + chunk > options_.max_prefill_tokens;
        const bool kv_full = kv_used_.load() + head.kv_bytes > kv_budget_;
        // First come, first served: a request that does not fit waits, and so do later ones.
        if (batch_full || prefill_full || kv_full) return;
        seq = std::move(queue_.front());
        queue_.pop_front();
        prefill_tokens += chunk;
      }
    }
    if (seq->cancelled.load()) {
      GenerateFinish f;
      f.reason = FinishReason::kCancelled;
      f.prompt_tokens = static_cast<int32_t>(seq->prompt.size());
      if (seq->score) {
        seq->done = true;
        seq->scored.set_value(absl::CancelledError("score cancelled"));
      } else {
        Retire(*seq, f);
      }
      continue;
    }
    const int64_t n = static_cast<int64_t>(seq->prompt.size());
    absl::Status status = common::TorchCall("admit", [&] {
      seq->cache.emplace(options_.model->NewCache(n + seq->max_new));
    });
    if (!status.ok()) {
      Retire(*seq, status);
      continue;
    }
    kv_used_.fetch_add(seq->kv_bytes);
    if (!seq->score) {
      seq->sampler.emplace(seq->params.sampling, seq->params.logprobs);
      seq->stream.emplace(seq->params.stop);
      seq->detokenizer.emplace(*options_.tokenizer);
      seq->history = seq->prompt;
      seq->finish.prompt_tokens = static_cast<int32_t>(n);
    }
    running_.push_back(std::move(seq));
    running_count_.fetch_add(1);
  }
}

void GenerationScheduler::Step() {
  // 1. Cancelled sequences leave before the step: their slot and cache are free for admission.
  for (auto& seq : running_) {
    if (seq->cancelled.load()) {
      seq->finish.reason = FinishReason::kCancelled;
      Retire(*seq, seq->finish);
    }
  }
  std::erase_if(running_, [](const auto& s) { return s->done; });
  // 2. Admission.
  Admit();
  if (running_.empty()) return;

  // 3. One packed forward: rows of every sequence back to back.
  const models::LlamaForCausalLM& model = *options_.model;
  std::vector<int64_t> ids;
  std::vector<models::SequenceSpan> spans;
  spans.reserve(running_.size());
  // The chunk of each prefilling sequence depends only on its own prompt, so a sequence's rows
  // (and, in deterministic mode, its results) do not depend on what else runs.
  for (auto& seq : running_) {
    if (seq->next_token < 0) {
      const int64_t n = static_cast<int64_t>(seq->prompt.size());
      const int64_t chunk = std::min(n - seq->prefilled, options_.max_prefill_tokens);
      ids.insert(ids.end(), seq->prompt.begin() + seq->prefilled,
                 seq->prompt.begin() + seq->prefilled + chunk);
      spans.push_back({&*seq->cache, chunk});
    } else {
      ids.push_back(seq->next_token);
      spans.push_back({&*seq->cache, 1});
    }
  }
  const auto device = model.model->embed_tokens->weight.device();
  at::Tensor logits;   // [sequences, vocab] float32: each sequence's last row
  absl::Status status = common::TorchCall("generate", [&] {
    c10::InferenceMode inference;
    at::Tensor input = at::tensor(ids, at::kLong).to(device);
    std::vector<at::Tensor> hidden_parts;
    if (options_.deterministic) {
      int64_t row = 0;
      for (const auto& span : spans) {
        hidden_parts.push_back(model.ForwardPacked(input.narrow(0, row, span.tokens), {span}));
        row += span.tokens;
      }
    } else {
      hidden_parts.push_back(model.ForwardPacked(input, spans));
    }
    at::Tensor hidden = hidden_parts.size() == 1 ? hidden_parts[0] : at::cat(hidden_parts, 0);
    std::vector<int64_t> last_rows;
    int64_t row = 0;
    for (size_t i = 0; i < spans.size(); ++i) {
      row += spans[i].tokens;
      last_rows.push_back(row - 1);
      if (running_[i]->score) {
        running_[i]->score_hidden.push_back(hidden.narrow(0, row - spans[i].tokens, spans[i].tokens));
      }
    }
    at::Tensor last = hidden.index_select(0, at::tensor(last_rows, at::kLong).to(device));
    if (options_.deterministic) {
      std::vector<at::Tensor> rows;
      for (int64_t i = 0; i < last.size(0); ++i) rows.push_back(model.lm_head->Forward(last.narrow(0, i, 1)));
      logits = at::cat(rows, 0).to(at::kFloat).to(at::kCPU);
    } else {
      logits = model.lm_head->Forward(last).to(at::kFloat).to(at::kCPU);
    }
  });
  steps_.fetch_add(1);
  step_rows_.fetch_add(static_cast<int64_t>(ids.size()));
  if (!status.ok()) {
    for (auto& seq : running_) Retire(*seq, status);
    running_.clear();
    return;
  }

  // 4. Sample, stream, retire.
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence& seq = *running_[i];
    if (seq.next_token < 0) {
      seq.prefilled += spans[i].tokens;
      // More of the prompt to prefill: no token yet (this row's logits are not used).
      if (seq.prefilled < static_cast<int64_t>(seq.prompt.size())) continue;
    }
    if (seq.score) {
      absl::StatusOr<ScoreResult> result;
      absl::Status s = common::TorchCall("score", [&] {
        c10::InferenceMode inference;
        ScoreResult out;
        out.token_ids = seq.prompt;
        const int64_t n = static_cast<int64_t>(seq.prompt.size());
        const at::Tensor hidden_rows =
            seq.score_hidden.size() == 1 ? seq.score_hidden[0] : at::cat(seq.score_hidden, 0);
        at::Tensor targets = at::tensor(std::vector<int64_t>(seq.prompt.begin() + 1, seq.prompt.end()),
                                        at::kLong).to(device).unsqueeze(1);
        // The output layer in row chunks: [n, vocab] float logits for a long text would be
        // gigabytes for a large vocabulary.
        constexpr int64_t kRows = 256;
        out.logprobs.reserve(n - 1);
        for (int64_t r = 0; r < n - 1; r += kRows) {
          const int64_t rows = std::min(kRows, n - 1 - r);
          at::Tensor lg = model.lm_head->Forward(hidden_rows.narrow(0, r, rows)).to(at::kFloat);
          const at::Tensor full = at::log_softmax(lg, -1);
          at::Tensor lp = full.gather(1, targets.narrow(0, r, rows)).squeeze(1).to(at::kCPU);
          out.logprobs.insert(out.logprobs.end(), lp.const_data_ptr<float>(),
                              lp.const_data_ptr<float>() + rows);
          if (seq.full_distributions) {
            const at::Tensor rows_cpu = full.to(at::kCPU).contiguous();
            out.vocab = rows_cpu.size(1);
            out.distributions.insert(out.distributions.end(), rows_cpu.const_data_ptr<float>(),
                                     rows_cpu.const_data_ptr<float>() + rows_cpu.numel());
          }
        }
        double sum = 0;
        for (float v : out.logprobs) sum += v;
        out.perplexity = std::exp(-sum / static_cast<double>(out.logprobs.size()));
        result = std::move(out);
      });
      if (!s.ok()) result = s;
      if (result.ok()) {
        // Free the cache first: once Score() returns, Stats() must not count it.
        Retire(seq, GenerateFinish{});
        seq.scored.set_value(std::move(result));
      } else {
        Retire(seq, result.status());
      }
      continue;
    }
    const GenerateParams& p = seq.params;
    SampledToken token;
    absl::Status s = common::TorchCall("sample", [&] { token = seq.sampler->Sample(logits[i], seq.history); });
    if (!s.ok()) {
      Retire(seq, s);
      continue;
    }
    seq.history.push_back(token.token_id);
    if (seq.finish.completion_tokens == 0) seq.finish.time_to_first_token_seconds = SecondsSince(seq.start);
    seq.finish.completion_tokens += 1;
    seq.next_token = token.token_id;

    GenerateChunk chunk;
    chunk.token_ids.push_back(token.token_id);
    if (p.logprobs > 0) chunk.logprobs.push_back(token.logprob);
    if (p.logprobs > 1) chunk.top_logprobs.push_back(std::move(token.top_logprobs));
    const bool is_eos = std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(),
                                  token.token_id) != options_.eos_token_ids.end();
    if (is_eos && !p.ignore_eos) {
      seq.observer->OnChunk(std::move(chunk));
      seq.finish.reason = FinishReason::kEos;
      Retire(seq, seq.finish);
      continue;
    }
    chunk.text = seq.stream->Push(seq.detokenizer->Push(token.token_id));
    seq.observer->OnChunk(std::move(chunk));
    if (seq.stream->stopped()) {
      seq.finish.reason = FinishReason::kStop;
      Retire(seq, seq.finish);
    } else if (seq.finish.completion_tokens >= seq.max_new) {
      seq.finish.reason = FinishReason::kLength;
      Retire(seq, seq.finish);
    }
  }
  std::erase_if(running_, [](const auto& s) { return s->done; });
}

}  // namespace quantserve::engine

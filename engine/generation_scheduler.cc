#include "engine/generation_scheduler.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/torch_status.h"
#include "engine/detokenizer.h"
#include "engine/sampler.h"
#include "engine/text_stream.h"

namespace quantserve::engine {

struct GenerationScheduler::Request {
  GenerateParams params;
  std::shared_ptr<GenerateObserver> observer;
  std::atomic<bool> cancelled{false};
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

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

GenerationScheduler::GenerationScheduler(Options options) : options_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

GenerationScheduler::~GenerationScheduler() { Shutdown(); }

std::unique_ptr<GenerationHandle> GenerationScheduler::Generate(
    GenerateParams params, std::shared_ptr<GenerateObserver> observer) {
  auto request = std::make_shared<Request>();
  request->params = std::move(params);
  request->observer = std::move(observer);
  // The handle holds the flag through an aliasing pointer, so it never extends the request.
  std::shared_ptr<std::atomic<bool>> flag(request, &request->cancelled);
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = absl::UnavailableError("model is shutting down");
    } else if (static_cast<int32_t>(queue_.size()) >= options_.max_queued) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "generation queue is full (", options_.max_queued, " waiting); retry later"));
    } else {
      queue_.push_back(request);
    }
  }
  if (!refused.ok()) {
    request->observer->OnFinish(refused);  // outside the lock: observers may call back in
  } else {
    cv_.notify_one();
  }
  return std::make_unique<Handle>(flag);
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
    std::shared_ptr<Request> request;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      request = std::move(queue_.front());
      queue_.pop_front();
    }
    // Run finishes the request through its observer; anything thrown outside its torch
    // boundary must not take the process down with it.
    try {
      Run(*request);
    } catch (const std::exception& e) {
      QS_LOG(ERROR) << "generation failed" << common::Kv("error", e.what());
      request->observer->OnFinish(absl::InternalError(std::string("generation failed: ") + e.what()));
    }
  }
}

void GenerationScheduler::Run(Request& r) {
  const auto start = std::chrono::steady_clock::now();
  const GenerateParams& p = r.params;
  GenerateObserver& observer = *r.observer;
  const models::LlamaForCausalLM& model = *options_.model;
  const int64_t vocab = model.config().vocab_size;

  std::vector<int32_t> ids = p.input_ids;
  if (ids.empty()) ids = options_.tokenizer->Encode(p.prompt, /*add_special_tokens=*/true);
  if (ids.empty()) {
    observer.OnFinish(absl::InvalidArgumentError("prompt: empty (no tokens to condition on)"));
    return;
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) {
      observer.OnFinish(absl::InvalidArgumentError(
          absl::StrCat("input_ids: token id ", id, " is outside the vocabulary [0, ", vocab, ")")));
      return;
    }
  }
  const int64_t prompt_len = static_cast<int64_t>(ids.size());
  if (prompt_len >= options_.context_length) {
    observer.OnFinish(absl::InvalidArgumentError(
        absl::StrCat("prompt: ", prompt_len, " tokens leave no room in the model's context of ",
                     options_.context_length, " tokens")));
    return;
  }
  const int64_t max_new = std::min<int64_t>(p.max_new_tokens, options_.context_length - prompt_len);

  GenerateFinish finish;
  finish.prompt_tokens = static_cast<int32_t>(prompt_len);
  absl::Status status = common::TorchCall("generate", [&]() -> absl::Status {
    c10::InferenceMode inference;
    models::KvCache cache = model.NewCache(prompt_len + max_new);
    Sampler sampler(p.sampling, p.logprobs);
    TextStream stream(p.stop);
    Detokenizer detokenizer(*options_.tokenizer);
    std::vector<int32_t> history = ids;
    at::Tensor input = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong)
                           .view({1, prompt_len})
                           .to(model.model->embed_tokens->weight.device());
    finish.reason = FinishReason::kLength;
    for (int64_t step = 0; step < max_new; ++step) {
      if (r.cancelled.load()) {
        finish.reason = FinishReason::kCancelled;
        break;
      }
      at::Tensor logits = model.Forward(input, cache, /*last_only=*/true).squeeze(0);
      SampledToken token = sampler.Sample(logits, history);
      history.push_back(token.token_id);
      if (step == 0) finish.time_to_first_token_seconds = SecondsSince(start);
      finish.completion_tokens += 1;

      GenerateChunk chunk;
      chunk.token_ids.push_back(token.token_id);
      if (p.logprobs > 0) chunk.logprobs.push_back(token.logprob);
      if (p.logprobs > 1) chunk.top_logprobs.push_back(std::move(token.top_logprobs));
      const bool is_eos = std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(),
                                    token.token_id) != options_.eos_token_ids.end();
      if (is_eos && !p.ignore_eos) {
        observer.OnChunk(std::move(chunk));
        finish.reason = FinishReason::kEos;
        break;
      }
      chunk.text = stream.Push(detokenizer.Push(token.token_id));
      observer.OnChunk(std::move(chunk));
      if (stream.stopped()) {
        finish.reason = FinishReason::kStop;
        break;
      }
      input = at::full({1, 1}, static_cast<int64_t>(token.token_id),
                       at::TensorOptions().dtype(at::kLong).device(input.device()));
    }
    finish.text = stream.Flush();
    return absl::OkStatus();
  });
  finish.seconds = SecondsSince(start);
  if (!status.ok()) {
    QS_LOG(ERROR) << "generation failed" << common::Kv("error", status.ToString());
    observer.OnFinish(status);
    return;
  }
  observer.OnFinish(std::move(finish));
}

}  // namespace quantserve::engine

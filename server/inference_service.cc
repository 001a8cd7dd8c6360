#include "server/inference_service.h"

#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "server/server_stream.h"

namespace quantserve::server {
namespace {

using common::Kv;

constexpr char kGenerate[] = "Generate";
constexpr char kEmbed[] = "Embed";
constexpr char kScore[] = "Score";
constexpr char kTokenize[] = "Tokenize";
// Initial metadata naming the model that serves a call (the variant, when routed).
constexpr char kVariantHeader[] = "x-quantserve-variant";

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

v1::GenerateFinish::Reason ToProto(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kLength:
      return v1::GenerateFinish::LENGTH;
    case engine::FinishReason::kStop:
      return v1::GenerateFinish::STOP;
    case engine::FinishReason::kEos:
      return v1::GenerateFinish::EOS;
    case engine::FinishReason::kCancelled:
      return v1::GenerateFinish::CANCELLED;
  }
  return v1::GenerateFinish::REASON_UNSPECIFIED;
}

const char* ReasonLabel(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kLength:
      return "length";
    case engine::FinishReason::kStop:
      return "stop";
    case engine::FinishReason::kEos:
      return "eos";
    case engine::FinishReason::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

engine::GenerateParams ToGenerateParams(const v1::GenerateRequest& request,
                                        const RequestLimits& limits) {
  engine::GenerateParams params;
  params.prompt = request.prompt();
  params.input_ids.assign(request.input_ids().begin(), request.input_ids().end());
  params.max_new_tokens =
      request.has_max_new_tokens() ? request.max_new_tokens() : limits.default_max_new_tokens;
  const v1::SamplingParams& sampling = request.sampling();
  params.sampling.temperature = sampling.temperature();
  params.sampling.top_k = sampling.top_k();
  params.sampling.top_p = sampling.has_top_p() ? sampling.top_p() : 1.0f;
  params.sampling.repetition_penalty =
      sampling.has_repetition_penalty() ? sampling.repetition_penalty() : 1.0f;
  if (sampling.has_seed()) {
    params.sampling.seed = sampling.seed();
  }
  params.stop.assign(request.stop().begin(), request.stop().end());
  params.ignore_eos = request.ignore_eos();
  params.logprobs = request.logprobs();
  return params;
}

std::shared_ptr<const engine::EmbedParams> EmbedParamsOf(const v1::EmbedRequest& request) {
  auto params = std::make_shared<engine::EmbedParams>();
  params->texts.assign(request.texts().begin(), request.texts().end());
  params->pooling = request.pooling();
  params->normalize = request.has_normalize() ? request.normalize() : true;
  return params;
}

std::shared_ptr<const engine::ScoreParams> ScoreParamsOf(const v1::ScoreRequest& request) {
  auto params = std::make_shared<engine::ScoreParams>();
  params->text = request.text();
  params->input_ids.assign(request.input_ids().begin(), request.input_ids().end());
  params->add_special_tokens =
      request.has_add_special_tokens() ? request.add_special_tokens() : true;
  return params;
}

// True when the unary call should not run: its client left or its deadline passed.
ModelLabels WithRoute(ModelLabels labels, const std::string& route) {
  labels.route = route;
  return labels;
}

absl::Status CheckStillWanted(grpc::CallbackServerContext* context) {
  if (context->deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError("deadline exceeded while queued");
  }
  if (context->IsCancelled()) {
    return absl::CancelledError("cancelled by the client while queued");
  }
  return absl::OkStatus();
}

// One Generate RPC from admission to its last byte. It is the engine's observer (called on
// the model's scheduler thread) and the producer of the RPC's ServerStream. It holds the model
// pin; it dies, releasing the pin, once the engine has finished with it (dropped the observer)
// and the stream is done (dropped its hooks), whichever comes last.
class GenerateCall final : public engine::GenerateObserver,
                           public std::enable_shared_from_this<GenerateCall> {
 public:
  GenerateCall(ServerMetrics& metrics, absl::Time start) : metrics_(metrics), start_(start) {}

  void Attach(std::shared_ptr<ServerStream<v1::GenerateResponse>> stream) {
    stream_ = std::move(stream);
  }

  // Labels are fixed before the call is shared with the engine.
  void Pin(ModelHandle handle, const std::string& route) {
    labels_ = handle.labels();
    labels_.route = route;
    handle_.emplace(std::move(handle));
  }
  const ModelLabels& labels() const { return labels_; }

  // Submits to the engine. The observer is this call.
  void Start(const v1::GenerateRequest& request, const RequestLimits& limits) {
    std::weak_ptr<GenerateCall> weak = weak_from_this();
    handle_->SetCanceller([weak] {
      if (auto call = weak.lock()) {
        call->CancelForUnload();
      }
    });
    metrics_.RequestQueued(labels_);
    std::unique_ptr<engine::GenerationHandle> generation =
        handle_->model().Generate(ToGenerateParams(request, limits), shared_from_this());
    engine::GenerationHandle* cancel_now = nullptr;
    {
      absl::MutexLock lock(&mu_);
      generation_ = std::move(generation);
      if (cancel_requested_) {
        cancel_now = generation_.get();  // the client left while we were submitting
      }
    }
    if (cancel_now != nullptr) {
      cancel_now->Cancel();
    }
  }

  // The client went away (or the deadline passed). Never blocks.
  void Cancel() {
    engine::GenerationHandle* generation = nullptr;
    {
      absl::MutexLock lock(&mu_);
      cancel_requested_ = true;
      generation = generation_.get();
    }
    if (generation != nullptr) {
      generation->Cancel();
    }
  }

  void OnChunk(engine::GenerateChunk chunk) override {
    const absl::Time now = absl::Now();
    const int64_t tokens = static_cast<int64_t>(chunk.token_ids.size());
    if (tokens > 0) {
      absl::MutexLock lock(&mu_);
      if (!first_token_time_.has_value()) {
        first_token_time_ = now;
        metrics_.RecordTimeToFirstToken(labels_, absl::ToDoubleSeconds(now - start_));
        metrics_.RequestStarted(labels_);
        started_ = true;
      } else {
        metrics_.RecordInterTokenLatency(labels_, absl::ToDoubleSeconds(now - last_token_time_),
                                         tokens);
      }
      last_token_time_ = now;
    }
    v1::GenerateResponse response;
    response.mutable_token_ids()->Add(chunk.token_ids.begin(), chunk.token_ids.end());
    response.set_text(std::move(chunk.text));
    response.mutable_logprobs()->Add(chunk.logprobs.begin(), chunk.logprobs.end());
    for (const auto& alternatives : chunk.top_logprobs) {
      v1::TopLogprobs* top = response.add_top_logprobs();
      for (const engine::TokenLogprob& alternative : alternatives) {
        v1::TokenLogprob* entry = top->add_entries();
        entry->set_token_id(alternative.token_id);
        entry->set_logprob(alternative.logprob);
      }
    }
    stream_->Write(std::move(response));
  }

  void OnFinish(absl::StatusOr<engine::GenerateFinish> finish) override {
    bool started = false;
    bool cancelled_for_unload = false;
    std::optional<absl::Time> first_token;
    {
      absl::MutexLock lock(&mu_);
      started = started_;
      cancelled_for_unload = cancelled_for_unload_;
      first_token = first_token_time_;
    }
    metrics_.RequestEnded(labels_, started);
    if (!finish.ok()) {
      metrics_.RecordGeneration(labels_, 0, 0, "error");
      stream_->Finish(finish.status());
      return;
    }
    metrics_.RecordGeneration(labels_, finish->prompt_tokens, finish->completion_tokens,
                              ReasonLabel(finish->reason));
    v1::GenerateResponse last;
    last.set_text(std::move(finish->text));
    v1::GenerateFinish* out = last.mutable_finish();
    out->set_reason(ToProto(finish->reason));
    out->set_prompt_tokens(finish->prompt_tokens);
    out->set_completion_tokens(finish->completion_tokens);
    out->set_served_by(labels_.model);
    out->set_time_to_first_token_seconds(
        first_token.has_value() ? absl::ToDoubleSeconds(*first_token - start_) : 0.0);
    out->set_seconds(SecondsSince(start_));
    stream_->Write(std::move(last));
    if (cancelled_for_unload && finish->reason == engine::FinishReason::kCancelled) {
      stream_->Finish(absl::UnavailableError(absl::StrCat(
          "model '", labels_.model, "' was unloaded while this request was generating")));
    } else {
      stream_->Finish(absl::OkStatus());
    }
  }

 private:
  void CancelForUnload() {
    {
      absl::MutexLock lock(&mu_);
      cancelled_for_unload_ = true;
    }
    Cancel();
  }

  ServerMetrics& metrics_;
  const absl::Time start_;
  std::shared_ptr<ServerStream<v1::GenerateResponse>> stream_;
  ModelLabels labels_;
  std::optional<ModelHandle> handle_;  // declared before generation_: destroyed after it

  absl::Mutex mu_;
  std::unique_ptr<engine::GenerationHandle> generation_ ABSL_GUARDED_BY(mu_);
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_for_unload_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Time> first_token_time_ ABSL_GUARDED_BY(mu_);
  absl::Time last_token_time_ ABSL_GUARDED_BY(mu_);
};

// A routed Generate's copy on the route's mirror: runs like any request (and is counted in
// the mirror's metrics) but its output goes nowhere. Holds the mirror's pin until the engine
// finishes with it; an unload of the mirror cancels it.
class MirrorGeneration final : public engine::GenerateObserver,
                               public std::enable_shared_from_this<MirrorGeneration> {
 public:
  MirrorGeneration(ServerMetrics& metrics, ModelHandle handle, const std::string& route,
                   absl::Time start)
      : metrics_(metrics), labels_(WithRoute(handle.labels(), route)), start_(start),
        handle_(std::move(handle)) {}

  void Start(const v1::GenerateRequest& request, const RequestLimits& limits) {
    std::weak_ptr<MirrorGeneration> weak = weak_from_this();
    handle_->SetCanceller([weak] {
      if (auto self = weak.lock()) self->Cancel();
    });
    metrics_.RequestQueued(labels_);
    std::unique_ptr<engine::GenerationHandle> generation =
        handle_->model().Generate(ToGenerateParams(request, limits), shared_from_this());
    absl::MutexLock lock(&mu_);
    generation_ = std::move(generation);
  }

  void OnChunk(engine::GenerateChunk chunk) override {
    if (chunk.token_ids.empty()) return;
    absl::MutexLock lock(&mu_);
    if (!started_) {
      started_ = true;
      metrics_.RecordTimeToFirstToken(labels_, SecondsSince(start_));
      metrics_.RequestStarted(labels_);
    }
  }

  void OnFinish(absl::StatusOr<engine::GenerateFinish> finish) override {
    bool started;
    {
      absl::MutexLock lock(&mu_);
      started = started_;
    }
    metrics_.RequestEnded(labels_, started);
    if (finish.ok()) {
      metrics_.RecordGeneration(labels_, finish->prompt_tokens, finish->completion_tokens,
                                ReasonLabel(finish->reason));
    } else {
      metrics_.RecordGeneration(labels_, 0, 0, "error");
    }
    metrics_.RecordRequest(kGenerate, labels_, finish.status().code(), SecondsSince(start_));
    metrics_.RecordMirrorRequest(labels_);
  }

 private:
  void Cancel() {
    absl::MutexLock lock(&mu_);
    if (generation_ != nullptr) generation_->Cancel();
  }

  ServerMetrics& metrics_;
  const ModelLabels labels_;
  const absl::Time start_;
  std::optional<ModelHandle> handle_;  // declared before generation_: destroyed after it
  absl::Mutex mu_;
  std::unique_ptr<engine::GenerationHandle> generation_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::StatusOr<InferenceService::Target> InferenceService::Resolve(
    const std::string& name, const std::string& routing_key) {
  if (options_.routes != nullptr) {
    const RouteTable::ReadyFn ready = [this](absl::string_view model) {
      absl::StatusOr<ModelSnapshot> snapshot = options_.registry->Get(model);
      return snapshot.ok() && snapshot->state == ModelState::kReady;
    };
    // A variant can stop being READY between the pick and the pin: pick again (it is then
    // skipped), a few times at most.
    for (int attempt = 0; attempt < 3; ++attempt) {
      std::optional<absl::StatusOr<RouteChoice>> choice =
          options_.routes->Pick(name, routing_key, ready);
      if (!choice.has_value()) break;  // not a route: a model name
      if (!choice->ok()) return choice->status();
      absl::StatusOr<ModelHandle> handle = options_.registry->Acquire((*choice)->model);
      if (!handle.ok()) continue;
      Target target;
      target.model.emplace(*std::move(handle));
      target.route = name;
      if (!(*choice)->mirror.empty()) {
        absl::StatusOr<ModelHandle> mirror = options_.registry->Acquire((*choice)->mirror);
        if (mirror.ok()) target.mirror.emplace(*std::move(mirror));
      }
      return target;
    }
    if (options_.routes->Contains(name)) {
      return absl::UnavailableError(
          absl::StrCat("route '", name, "': its variants stopped serving while routing"));
    }
  }
  absl::StatusOr<ModelHandle> handle = options_.registry->Acquire(name);
  if (!handle.ok()) return handle.status();
  Target target;
  target.model.emplace(*std::move(handle));
  return target;
}

absl::StatusOr<std::unique_ptr<InferenceService>> InferenceService::Create(Options options) {
  if (options.registry == nullptr || options.metrics == nullptr) {
    return absl::InvalidArgumentError("InferenceService: registry and metrics are required");
  }
  if (options.limits.max_new_tokens < 1 || options.limits.default_max_new_tokens < 1 ||
      options.limits.default_max_new_tokens > options.limits.max_new_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("InferenceService: need 1 <= default_max_new_tokens (",
                     options.limits.default_max_new_tokens, ") <= max_new_tokens (",
                     options.limits.max_new_tokens, ")"));
  }
  absl::StatusOr<std::unique_ptr<ThreadPool>> pool =
      ThreadPool::Create({.name = "request",
                          .num_threads = options.request_threads,
                          .max_queued = options.max_queued_requests});
  if (!pool.ok()) {
    return pool.status();
  }
  return std::unique_ptr<InferenceService>(
      new InferenceService(std::move(options), *std::move(pool)));
}

InferenceService::InferenceService(Options options, std::unique_ptr<ThreadPool> pool)
    : options_(std::move(options)), request_pool_(std::move(pool)) {}

InferenceService::~InferenceService() = default;

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  const absl::Time start = absl::Now();
  auto call = std::make_shared<GenerateCall>(*options_.metrics, start);
  ServerMetrics* metrics = options_.metrics;
  auto stream = ServerStream<v1::GenerateResponse>::Create(
      context, {.on_cancel = [call] { call->Cancel(); },
                .on_finish =
                    [call, metrics, start](const absl::Status& status) {
                      metrics->RecordRequest(kGenerate, call->labels(), status.code(),
                                             SecondsSince(start));
                      if (!status.ok()) {
                        QS_LOG(DEBUG) << "generate failed" << Kv("model", call->labels().model)
                                      << Kv("code", absl::StatusCodeToString(status.code()))
                                      << Kv("error", status.message());
                      }
                    }});
  call->Attach(stream);
  if (absl::Status s = Authorize(options_.auth, context, kGenerate); !s.ok()) {
    stream->Finish(std::move(s));
    return stream->reactor();
  }
  if (absl::Status s = ValidateGenerateRequest(*request, options_.limits); !s.ok()) {
    stream->Finish(std::move(s));
    return stream->reactor();
  }
  absl::StatusOr<Target> target = Resolve(request->model(), request->routing_key());
  if (!target.ok()) {
    stream->Finish(target.status());
    return stream->reactor();
  }
  context->AddInitialMetadata(kVariantHeader, target->model->name());
  if (target->mirror.has_value()) {
    std::make_shared<MirrorGeneration>(*options_.metrics, *std::move(target->mirror),
                                       target->route, start)
        ->Start(*request, options_.limits);
  }
  call->Pin(*std::move(target->model), target->route);
  call->Start(*request, options_.limits);
  return stream->reactor();
}

void InferenceService::RunMirror(const char* rpc, ModelHandle mirror, const std::string& route,
                                 UnaryWork work) {
  const absl::Time start = absl::Now();
  const ModelLabels labels = WithRoute(mirror.labels(), route);
  ServerMetrics* metrics = options_.metrics;
  auto pin = std::make_shared<std::optional<ModelHandle>>(std::move(mirror));
  metrics->RequestQueued(labels);
  const bool queued = request_pool_->TrySchedule([pin, labels, metrics, rpc, start, work] {
    metrics->RequestStarted(labels);
    const absl::Status status = work(**pin, labels, /*discard=*/true);
    pin->reset();
    metrics->RequestEnded(labels, /*started=*/true);
    metrics->RecordRequest(rpc, labels, status.code(), SecondsSince(start));
    metrics->RecordMirrorRequest(labels);
  });
  if (!queued) {
    pin->reset();
    metrics->RequestEnded(labels, /*started=*/false);  // the pool is full: the copy is dropped
  }
}

grpc::ServerUnaryReactor* InferenceService::RunUnary(grpc::CallbackServerContext* context,
                                                     const char* rpc, const std::string& model_name,
                                                     const std::string& routing_key,
                                                     absl::Status validation, UnaryWork work) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServerMetrics* metrics = options_.metrics;
  auto finish = [reactor, metrics, rpc, start](const ModelLabels& labels,
                                               const absl::Status& status) {
    metrics->RecordRequest(rpc, labels, status.code(), SecondsSince(start));
    reactor->Finish(ToGrpcStatus(status));
  };
  if (absl::Status s = Authorize(options_.auth, context, rpc); !s.ok()) {
    finish(ModelLabels(), s);
    return reactor;
  }
  if (!validation.ok()) {
    finish(ModelLabels(), validation);
    return reactor;
  }
  absl::StatusOr<Target> target = Resolve(model_name, routing_key);
  if (!target.ok()) {
    finish(ModelLabels(), target.status());
    return reactor;
  }
  context->AddInitialMetadata(kVariantHeader, target->model->name());
  // Tokenize has nothing to mirror: a route's variants share their tokenizer.
  if (target->mirror.has_value() && rpc != kTokenize) {
    RunMirror(rpc, *std::move(target->mirror), target->route, work);
  }
  const ModelLabels labels = target->labels();
  // Shared so the closure stays copyable; reset as soon as the engine call returns.
  auto pin = std::make_shared<std::optional<ModelHandle>>(std::move(target->model));
  metrics->RequestQueued(labels);
  bool queued =
      request_pool_->TrySchedule([context, pin, labels, metrics, finish, work = std::move(work)] {
        absl::Status status = CheckStillWanted(context);
        if (!status.ok()) {
          pin->reset();
          metrics->RequestEnded(labels, /*started=*/false);
          finish(labels, status);
          return;
        }
        metrics->RequestStarted(labels);
        status = work(**pin, labels, /*discard=*/false);
        pin->reset();  // release the model before answering, so a waiting unload proceeds
        metrics->RequestEnded(labels, /*started=*/true);
        finish(labels, status);
      });
  if (!queued) {
    pin->reset();
    metrics->RequestEnded(labels, /*started=*/false);
    finish(labels,
           absl::ResourceExhaustedError(absl::StrCat(
               "request queue full (", options_.max_queued_requests, " waiting); retry later")));
  }
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Embed(grpc::CallbackServerContext* context,
                                                  const v1::EmbedRequest* request,
                                                  v1::EmbedResponse* response) {
  ServerMetrics* metrics = options_.metrics;
  return RunUnary(
      context, kEmbed, request->model(), request->routing_key(),
      ValidateEmbedRequest(*request, options_.limits),
      // The work owns its parameters: a mirror's copy may outlive the RPC and its request.
      [params = EmbedParamsOf(*request), response, metrics](
          const ModelHandle& model, const ModelLabels& labels, bool discard) -> absl::Status {
        absl::StatusOr<engine::EmbedResult> result = model.model().Embed(*params);
        if (!result.ok()) {
          return result.status();
        }
        if (result->embeddings.size() != params->texts.size()) {
          return absl::InternalError(absl::StrCat("engine returned ", result->embeddings.size(),
                                                  " embeddings for ", params->texts.size(),
                                                  " texts"));
        }
        metrics->RecordEmbedTokens(labels, result->prompt_tokens);
        if (discard) return absl::OkStatus();
        for (const std::vector<float>& embedding : result->embeddings) {
          response->add_embeddings()->mutable_values()->Add(embedding.begin(), embedding.end());
        }
        response->set_served_by(model.name());
        response->set_prompt_tokens(result->prompt_tokens);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* InferenceService::Score(grpc::CallbackServerContext* context,
                                                  const v1::ScoreRequest* request,
                                                  v1::ScoreResponse* response) {
  return RunUnary(
      context, kScore, request->model(), request->routing_key(), ValidateScoreRequest(*request),
      [params = ScoreParamsOf(*request), response](
          const ModelHandle& model, const ModelLabels& labels, bool discard) -> absl::Status {
        absl::StatusOr<engine::ScoreResult> result = model.model().Score(*params);
        if (!result.ok()) {
          return result.status();
        }
        if (discard) return absl::OkStatus();
        response->mutable_token_ids()->Add(result->token_ids.begin(), result->token_ids.end());
        response->mutable_logprobs()->Add(result->logprobs.begin(), result->logprobs.end());
        response->set_perplexity(result->perplexity);
        response->set_served_by(model.name());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  // A route's variants share their tokenizer: no routing key, and a mirror has nothing to add.
  return RunUnary(context, kTokenize, request->model(), /*routing_key=*/"",
                  ValidateTokenizeRequest(*request),
                  [request, response](const ModelHandle& model, const ModelLabels& labels,
                                      bool discard) -> absl::Status {
                    if (discard) return absl::OkStatus();
                    const bool add_special =
                        request->has_add_special_tokens() ? request->add_special_tokens() : true;
                    absl::StatusOr<engine::TokenizeResult> result =
                        model.model().Tokenize(request->text(), add_special);
                    if (!result.ok()) {
                      return result.status();
                    }
                    response->mutable_token_ids()->Add(result->token_ids.begin(),
                                                       result->token_ids.end());
                    for (std::string& token : result->tokens) {
                      response->add_tokens(std::move(token));
                    }
                    return absl::OkStatus();
                  });
}

}  // namespace quantserve::server

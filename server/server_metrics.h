#pragma once
// ServerMetrics: every Prometheus metric the server exports, defined once, in one registry.
//
// There is no process-wide metrics singleton: main creates one ServerMetrics, hands it to the
// Server (which hands it to the registry and services), and registers registry() with the
// /metrics exposer. Tests create their own and scrape registry() directly.
//
// Names follow quantserve_<subsystem>_<what>_<unit> with base units; labels are `model` and
// `quant_method` (bounded by the set of loaded models: requests that never resolved to a
// model are recorded with empty labels); request series (marked *) also carry `route` (the
// route the client named, "" for a direct call) and `variant` (the model that served it), so
// an A/B route's variants compare side by side; plus `rpc` and `code` on request counts:
//
// * quantserve_rpc_requests_total{rpc,model,quant_method,code}            counter
// * quantserve_rpc_request_duration_seconds{rpc,model,quant_method}       histogram
//   quantserve_inference_requests_waiting{model,quant_method}             gauge
//   quantserve_inference_requests_running{model,quant_method}             gauge
// * quantserve_generate_time_to_first_token_seconds{model,quant_method}   histogram
// * quantserve_generate_inter_token_latency_seconds{model,quant_method}   histogram
// * quantserve_generate_prompt_tokens_total{model,quant_method}           counter
// * quantserve_generate_generated_tokens_total{model,quant_method}        counter
// * quantserve_generate_finished_total{model,quant_method,reason}         counter
// * quantserve_embed_prompt_tokens_total{model,quant_method}              counter
//   quantserve_model_loads_total{model,quant_method,code}                 counter
//   quantserve_model_load_duration_seconds{model,quant_method}            gauge (last load)
//   quantserve_model_memory_footprint_bytes{model,quant_method}           gauge
//   quantserve_model_parameters{model,quant_method}                       gauge
//   quantserve_model_peak_load_memory_bytes{model,quant_method}           gauge
//   quantserve_model_state{model,quant_method}                            gauge (ModelState)
//   quantserve_model_linear_layers{model,quant_method,kernel}             gauge (layers per kernel)
//   quantserve_model_kv_cache_budget_bytes{model,quant_method}            gauge
//   quantserve_model_kv_cache_usage_ratio{model,quant_method}             gauge (0-1)
//   vllm:num_requests_running{model_name}, vllm:num_requests_waiting{model_name},
//   vllm:kv_cache_usage_perc{model_name}           (aliases, with vllm_compatible_gauges)
//
// A request is "waiting" from admission until the engine starts on it (its first generated
// token, or the start of a unary engine call) and "running" from then until it ends.
//
// Thread-safety: every method may be called from any thread; none blocks for long (atomic
// updates and short family locks), so the engine's scheduler thread may record too.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/model_state.h"

namespace quantserve::server {

// The model a request or load is about.
struct ModelLabels {
  std::string model{};         // model name; "" when the request did not resolve to a model
  std::string quant_method{};  // "none" when unquantized; "" when unknown
  // The route a request named ("" for a direct call and for model-level series).
  std::string route{};
};

class ServerMetrics {
 public:
  struct Options {
    // Buckets (seconds, strictly increasing) of quantserve_rpc_request_duration_seconds.
    std::vector<double> request_duration_buckets = {
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
    // Buckets (seconds) of quantserve_generate_time_to_first_token_seconds.
    std::vector<double> time_to_first_token_buckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06,
                                                       0.08,  0.1,   0.25, 0.5,  0.75, 1,
                                                       2.5,   5,     7.5,  10,   20,   40};
    // Buckets (seconds) of quantserve_generate_inter_token_latency_seconds.
    std::vector<double> inter_token_latency_buckets = {
        0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
        0.075, 0.1,    0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1,    2.5};
    // Also export vllm:num_requests_running / vllm:num_requests_waiting /
    // vllm:kv_cache_usage_perc{model_name}, so routers and autoscalers written for vLLM (the
    // Gateway API Inference Extension, production-stack's router) read us unchanged
    // (--vllm_compatible_metrics).
    bool vllm_compatible_gauges = false;
  };

  // Errors: INVALID_ARGUMENT when a bucket list is empty or not strictly increasing.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(Options options);
  // All defaults; cannot fail.
  static std::unique_ptr<ServerMetrics> CreateDefault();

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The registry holding every family, for the exposer (or a test's TextSerializer).
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // One finished RPC: its final code and its duration from arrival to finish.
  void RecordRequest(absl::string_view rpc, const ModelLabels& labels, absl::StatusCode code,
                     double seconds);

  // Inference queue accounting (see the header comment): Queued on admission, Started when
  // the engine starts on it, Ended once (with whether Started happened).
  void RequestQueued(const ModelLabels& labels);
  void RequestStarted(const ModelLabels& labels);
  void RequestEnded(const ModelLabels& labels, bool started);

  // Generation timings: the first token's latency, then the gap before each later chunk,
  // spread evenly over the chunk's `tokens`.
  void RecordTimeToFirstToken(const ModelLabels& labels, double seconds);
  void RecordInterTokenLatency(const ModelLabels& labels, double gap_seconds, int64_t tokens);
  // A finished generation's token counts and finish reason (length|stop|eos|cancelled|error).
  void RecordGeneration(const ModelLabels& labels, int64_t prompt_tokens, int64_t generated_tokens,
                        absl::string_view finish_reason);
  void RecordEmbedTokens(const ModelLabels& labels, int64_t prompt_tokens);
  // A route's mirror ran a copy of a request on this model (its output was discarded).
  void RecordMirrorRequest(const ModelLabels& labels);

  // Routes: quantserve_route_variant_weight{route,variant} per variant; SetRouteWeights
  // replaces the route's series, RemoveRoute drops them.
  void SetRouteWeights(absl::string_view route,
                       const std::vector<std::pair<std::string, uint32_t>>& weights);
  void RemoveRoute(absl::string_view route);
  // The last Compare's headline figures per (baseline, variant):
  // quantserve_compare_kl_divergence, _top1_agreement and _perplexity_ratio.
  void SetCompareResult(absl::string_view baseline, absl::string_view variant, double kl_mean,
                        double top1_agreement, double perplexity_ratio);

  // Model lifecycle (called by the model registry). SetModelState replaces the entry's state
  // series (its quant_method label may change once the load knows the method).
  void SetModelState(const ModelLabels& labels, ModelState state);
  // A finished load attempt; on success also sets the model's load-duration gauge.
  void RecordModelLoad(const ModelLabels& labels, absl::StatusCode code, double seconds);
  void SetModelFacts(const ModelLabels& labels, int64_t memory_footprint_bytes, int64_t parameters,
                     int64_t peak_load_memory_bytes);
  // Which kernel each linear layer runs (kernel name -> layers) and the KV cache budget.
  void SetModelKernels(const ModelLabels& labels, const std::map<std::string, int32_t>& kernels,
                       int64_t kv_cache_budget_bytes);
  // The share of the model's KV budget in use (sampled by the server about once a second).
  void SetKvCacheUsage(const ModelLabels& labels, int64_t used_bytes, int64_t budget_bytes);
  // Drops an unloaded model's per-model gauges (counters and histograms stay).
  void RemoveModel(absl::string_view model);

 private:
  // The per-model gauges of one model entry, removed together when it goes away.
  struct ModelGauges {
    std::string quant_method{};
    prometheus::Gauge* state = nullptr;
    prometheus::Gauge* load_duration = nullptr;
    prometheus::Gauge* memory_footprint = nullptr;
    prometheus::Gauge* parameters = nullptr;
    prometheus::Gauge* peak_load_memory = nullptr;
    prometheus::Gauge* kv_cache_budget = nullptr;
    prometheus::Gauge* kv_cache_usage = nullptr;
    prometheus::Gauge* vllm_kv_usage = nullptr;
    std::vector<prometheus::Gauge*> kernels{};
  };

  ServerMetrics(Options options, std::shared_ptr<prometheus::Registry> registry);
  ModelGauges& GaugesFor(const ModelLabels& labels) ABSL_EXCLUSIVE_LOCKS_REQUIRED(models_mu_);
  void RemoveGauges(ModelGauges& gauges) ABSL_EXCLUSIVE_LOCKS_REQUIRED(models_mu_);

  const Options options_;
  const std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Counter>& requests_total_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Gauge>& requests_waiting_;
  prometheus::Family<prometheus::Gauge>& requests_running_;
  prometheus::Family<prometheus::Histogram>& time_to_first_token_;
  prometheus::Family<prometheus::Histogram>& inter_token_latency_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& generated_tokens_;
  prometheus::Family<prometheus::Counter>& generations_finished_;
  prometheus::Family<prometheus::Counter>& embed_prompt_tokens_;
  prometheus::Family<prometheus::Counter>& mirror_requests_;
  prometheus::Family<prometheus::Gauge>& route_variant_weight_;
  prometheus::Family<prometheus::Gauge>& compare_kl_;
  prometheus::Family<prometheus::Gauge>& compare_top1_;
  prometheus::Family<prometheus::Gauge>& compare_ppl_ratio_;
  prometheus::Family<prometheus::Counter>& model_loads_;
  prometheus::Family<prometheus::Gauge>& model_load_duration_;
  prometheus::Family<prometheus::Gauge>& model_memory_footprint_;
  prometheus::Family<prometheus::Gauge>& model_parameters_;
  prometheus::Family<prometheus::Gauge>& model_peak_load_memory_;
  prometheus::Family<prometheus::Gauge>& model_state_;
  prometheus::Family<prometheus::Gauge>& model_linear_layers_;
  prometheus::Family<prometheus::Gauge>& model_kv_cache_budget_;
  prometheus::Family<prometheus::Gauge>& model_kv_cache_usage_;
  prometheus::Family<prometheus::Gauge>* vllm_kv_usage_ = nullptr;
  prometheus::Family<prometheus::Gauge>* vllm_running_ = nullptr;
  prometheus::Family<prometheus::Gauge>* vllm_waiting_ = nullptr;

  absl::Mutex models_mu_;
  std::map<std::string, ModelGauges, std::less<>> models_ ABSL_GUARDED_BY(models_mu_);
  std::map<std::string, std::vector<prometheus::Gauge*>, std::less<>> routes_
      ABSL_GUARDED_BY(models_mu_);
};

}  // namespace quantserve::server

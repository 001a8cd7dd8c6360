#pragma once
// InferenceService: the data plane (Generate, Embed, Score, Tokenize) over gRPC's callback API.
//
// Each RPC validates its request (request_validation.h), pins the named model through the
// registry, hands the work to the engine without blocking the gRPC thread, converts the final
// absl::Status once, and records metrics.
//
// * Generate streams: the engine's observer (called on the model's scheduler thread) turns
//   chunks into GenerateResponses and queues them on a ServerStream, which writes one at a
//   time and ends with the `finish` message. Client cancellation and deadlines reach the
//   engine through GenerationHandle::Cancel; an unload whose drain timeout passes cancels the
//   generation too (the client then gets the finish message and UNAVAILABLE).
// * Embed, Score and Tokenize block inside the engine, so they run on a request pool; a full
//   pool queue answers RESOURCE_EXHAUSTED, and requests whose deadline passed or whose client
//   left while queued are not run.
//
// Routes: every RPC also accepts a route name (route_table.h). The route picks a READY variant
// (sticky per routing_key), the response names it in served_by and in the initial metadata
// `x-quantserve-variant`, and a mirrored request also runs on the route's mirror with its
// output discarded (Generate, Embed, Score; only the mirror's metrics see it).
//
// Lifetime: a request's state is shared between the reactor and the engine's observer; the
// model handle (the pin) is released only once both are done with it, so a model is never
// shut down under a running generation.

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "quantserve/v1/inference_service.grpc.pb.h"
#include "server/auth.h"
#include "server/model_registry.h"
#include "server/request_validation.h"
#include "server/route_table.h"
#include "server/server_metrics.h"
#include "server/thread_pool.h"

namespace quantserve::server {

class InferenceService final : public v1::InferenceService::CallbackService {
 public:
  struct Options {
    // Where models come from. Required; must outlive the service.
    ModelRegistry* registry = nullptr;
    // Where request metrics go. Required; must outlive the service.
    ServerMetrics* metrics = nullptr;
    // Routes clients may name in place of a model. Optional; must outlive the service.
    RouteTable* routes = nullptr;
    // Bearer-token checks (server/auth.h). Optional (null = every RPC open); must outlive
    // the service.
    Authenticator* auth = nullptr;
    // Request limits checked before any work is done.
    RequestLimits limits{};
    // Threads running blocking engine calls (Embed, Score, Tokenize); >= 1.
    int request_threads = 4;
    // Most such calls waiting for a thread before new ones get RESOURCE_EXHAUSTED.
    size_t max_queued_requests = 1024;
  };

  // Errors: INVALID_ARGUMENT (missing registry/metrics, bad thread count).
  static absl::StatusOr<std::unique_ptr<InferenceService>> Create(Options options);
  // Waits for queued unary calls to finish.
  ~InferenceService() override;

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context,
                                  const v1::EmbedRequest* request,
                                  v1::EmbedResponse* response) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  // Defined in inference_compare.cc; runs on the request pool (compare_runner.h).
  grpc::ServerWriteReactor<v1::CompareProgress>* Compare(
      grpc::CallbackServerContext* context, const v1::CompareRequest* request) override;

 private:
  explicit InferenceService(Options options, std::unique_ptr<ThreadPool> pool);

  // A request's pinned model, and the mirror's pin when a route mirrors this request.
  struct Target {
    std::optional<ModelHandle> model;
    std::optional<ModelHandle> mirror;
    std::string route;  // the route the request named; "" for a model name
    // The model's labels with the route: what the request's metrics carry.
    ModelLabels labels() const {
      ModelLabels l = model->labels();
      l.route = route;
      return l;
    }
  };
  // Pins `name`: a model, or the variant a route picks for `routing_key` (see route_table.h).
  // Errors: as ModelRegistry::Acquire; UNAVAILABLE when no variant of the route is ready.
  absl::StatusOr<Target> Resolve(const std::string& name, const std::string& routing_key);

  // Unless `validation` failed, resolves `model_name`, runs `work` (which fills the response
  // from the pinned model; with discard = true it runs for a mirror and fills nothing) on the
  // request pool, and finishes the RPC with its status. `rpc` names the method in metrics.
  // `labels` are the request's (the model's, with its route) for the work's own metrics.
  using UnaryWork = std::function<absl::Status(const ModelHandle& model,
                                               const ModelLabels& labels, bool discard)>;
  grpc::ServerUnaryReactor* RunUnary(grpc::CallbackServerContext* context, const char* rpc,
                                     const std::string& model_name,
                                     const std::string& routing_key, absl::Status validation,
                                     UnaryWork work);
  // Runs `work` for a mirror on the request pool (dropped when the pool is full).
  void RunMirror(const char* rpc, ModelHandle mirror, const std::string& route, UnaryWork work);

  const Options options_;
  std::unique_ptr<ThreadPool> request_pool_;
};

}  // namespace quantserve::server

#pragma once
// Server: one quantserve process's gRPC server, its model registry and services.
//
// Create() builds everything from one Options struct and starts serving:
//   * ModelService and InferenceService (callback API), grpc.health.v1 (the server, "", plus
//     one service name per model: SERVING while the model is READY) and reflection;
//   * the ModelRegistry, with the injected loader (the real engine in main, fakes in tests);
//   * models from the startup config, loaded in the background (their health names report
//     NOT_SERVING until READY; a failed one is FAILED and the server keeps serving).
//
// Shutdown() is graceful: health goes NOT_SERVING, the gRPC server stops accepting calls and
// gives in-flight ones until the drain deadline (then cancels them, which stops generations),
// and finally every model is drained and unloaded. Wait() returns once that is done.
//
// Thread-safety: all methods may be called from any thread; Shutdown is idempotent.
// Ownership: the Server owns the registry and services; `metrics` is borrowed.

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server.h"
#include "server/auth.h"
#include "server/tls.h"
#include "server/inference_service.h"
#include "server/model_registry.h"
#include "server/route_table.h"
#include "server/model_service.h"
#include "server/request_validation.h"
#include "server/server_metrics.h"

namespace quantserve::server {

class Server {
 public:
  struct Options {
    // host:port to serve gRPC on; port 0 picks a free port (see port()).
    std::string listen_address = "0.0.0.0:50051";
    // Directory every model path is resolved inside. Required.
    std::string model_root{};
    // Loads may follow symlinks that lead outside model_root (see ResolveModelPath).
    bool allow_symlinks_outside_root = false;
    // Loads models (engine::LoadServableModel in production). Required.
    ModelLoader loader{};
    // Metrics sink. Required; must outlive the server.
    ServerMetrics* metrics = nullptr;
    // Startup config JSON file ({"models": [...], "routes": [...]}, see ParseStartupConfig and
    // ParseStartupRoutes); "" = none.
    std::string startup_config_path{};
    // Concurrent model loads.
    int load_threads = 2;
    // Threads running blocking inference calls (Embed, Score, Tokenize).
    int request_threads = 4;
    // Intra-op threads per model unless a load names its own; 0 = the library default.
    int num_threads = 0;
    // How each model batches concurrent requests (continuous batching, KV budget).
    BatchingOptions batching{};
    // Largest request message accepted, in bytes (gRPC max receive message size).
    int max_request_bytes = 16 << 20;
    // Inference request limits.
    RequestLimits limits{};
    // How long unloads and shutdown wait for in-flight requests before cancelling them.
    absl::Duration drain_timeout = absl::Seconds(30);
    // Bearer-token files (server/auth.h): admin RPCs (load, unload, save, routes) and
    // inference RPCs; "" leaves that scope open.
    std::string admin_token_file{};
    std::string inference_token_file{};
    // Transport security of the gRPC port (server/tls.h); default plaintext.
    TlsOptions tls{};
    // host:port of a second, plaintext gRPC port serving only grpc.health.v1 (the same
    // statuses), for probes that cannot speak TLS (Kubernetes' native gRPC probes); "" = none.
    // Nothing else is served there, so the main port's TLS and tokens still guard every RPC.
    std::string health_listen_address{};
    // How often each READY model's scheduler is sampled for the KV-usage gauges.
    absl::Duration stats_interval = absl::Seconds(1);
  };

  // Errors: INVALID_ARGUMENT (bad options or startup config), NOT_FOUND (model_root, config
  // file or a configured model directory missing), UNAVAILABLE (cannot listen).
  static absl::StatusOr<std::unique_ptr<Server>> Create(Options options);
  // Shuts down with a zero drain timeout if nobody did.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The port actually bound (useful with port 0) and "host:port" with it.
  int port() const { return port_; }
  // The health-only port actually bound; 0 without health_listen_address.
  int health_port() const { return health_port_; }
  std::string address() const;
  // Names of the models the startup config asked for, in config order.
  const std::vector<std::string>& startup_models() const { return startup_models_; }
  ModelRegistry& registry() const { return *registry_; }

  // Blocks until Shutdown has finished.
  void Wait();
  // Graceful shutdown (see the header comment). Idempotent; later calls wait for the first.
  void Shutdown(absl::Duration drain_timeout);

 private:
  explicit Server(Options options);
  void SetServing(const std::string& name, bool serving);
  // The stats thread: samples every READY model's ServingStats into the metrics each
  // stats_interval until shutdown.
  void SampleStatsUntilShutdown();

  const Options options_;
  // Declared before the registry, whose health callback uses them, so they outlive it.
  absl::Mutex health_mu_;
  grpc::HealthCheckServiceInterface* health_ ABSL_GUARDED_BY(health_mu_) = nullptr;
  // The health-only server's service (null without one), kept in step with health_.
  grpc::HealthCheckServiceInterface* plain_health_ ABSL_GUARDED_BY(health_mu_) = nullptr;
  int port_ = 0;
  int health_port_ = 0;
  std::vector<std::string> startup_models_;
  std::unique_ptr<ModelRegistry> registry_;
  RouteTable routes_;
  std::unique_ptr<Authenticator> auth_;  // null when no token file is set
  std::unique_ptr<ModelService> model_service_;
  std::unique_ptr<InferenceService> inference_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<grpc::Server> health_server_;  // health_listen_address; null without

  absl::Mutex shutdown_mu_;
  bool shutdown_started_ ABSL_GUARDED_BY(shutdown_mu_) = false;
  absl::Notification shutdown_done_;
  absl::Notification stop_stats_;
  std::thread stats_thread_;
};

}  // namespace quantserve::server

#include "server/server.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/load_request.h"
#include "server/routes.h"

namespace quantserve::server {
namespace {

using common::Kv;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read startup config '", path, "'"));
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Create(Options options) {
  if (options.metrics == nullptr) {
    return absl::InvalidArgumentError("Server: metrics is required");
  }
  if (!options.loader) {
    return absl::InvalidArgumentError("Server: loader is required");
  }
  if (options.model_root.empty()) {
    return absl::InvalidArgumentError("Server: model_root is required");
  }
  if (options.max_request_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Server: max_request_bytes must be >= 1, got ", options.max_request_bytes));
  }
  if (options.drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("Server: drain_timeout must be >= 0");
  }
  auto server = std::unique_ptr<Server>(new Server(std::move(options)));
  const Options& opts = server->options_;

  Server* raw = server.get();
  absl::StatusOr<std::unique_ptr<ModelRegistry>> registry = ModelRegistry::Create({
      .model_root = opts.model_root,
      .allow_symlinks_outside_root = opts.allow_symlinks_outside_root,
      .loader = opts.loader,
      .load_threads = opts.load_threads,
      .default_drain_timeout = opts.drain_timeout,
      .default_num_threads = opts.num_threads,
      .batching = opts.batching,
      .metrics = opts.metrics,
      .on_serving_changed = [raw](const std::string& name,
                                  bool serving) { raw->SetServing(name, serving); },
  });
  if (!registry.ok()) {
    return registry.status();
  }
  server->registry_ = *std::move(registry);

  std::vector<LoadRequest> startup;
  if (!opts.startup_config_path.empty()) {
    absl::StatusOr<std::string> text = ReadFile(opts.startup_config_path);
    if (!text.ok()) {
      return text.status();
    }
    absl::StatusOr<std::vector<LoadRequest>> parsed = ParseStartupConfig(*text);
    if (!parsed.ok()) {
      return absl::Status(parsed.status().code(),
                          absl::StrCat(opts.startup_config_path, ": ", parsed.status().message()));
    }
    startup = *std::move(parsed);
    for (const LoadRequest& request : startup) {
      // Misconfiguration fails startup; load errors later only fail their model.
      absl::StatusOr<std::string> resolved =
          ResolveModelPath(server->registry_->options().model_root, request.path,
                           server->registry_->options().allow_symlinks_outside_root);
      if (!resolved.ok()) {
        return absl::Status(resolved.status().code(),
                            absl::StrCat(opts.startup_config_path, ": model '", request.name,
                                         "': ", resolved.status().message()));
      }
      server->startup_models_.push_back(request.name);
    }
    absl::StatusOr<std::vector<RouteSpec>> routes = ParseStartupRoutes(*text);
    if (!routes.ok()) {
      return absl::Status(routes.status().code(),
                          absl::StrCat(opts.startup_config_path, ": ", routes.status().message()));
    }
    for (RouteSpec& route : *routes) {
      if (std::find(server->startup_models_.begin(), server->startup_models_.end(),
                    route.name) != server->startup_models_.end()) {
        return absl::AlreadyExistsError(absl::StrCat(opts.startup_config_path, ": route '",
                                                     route.name, "' is also a model's name"));
      }
      if (absl::Status s = SetCheckedRoute(server->routes_, *server->registry_, opts.metrics,
                                           std::move(route));
          !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(opts.startup_config_path, ": ", s.message()));
      }
    }
  }

  if (!opts.admin_token_file.empty() || !opts.inference_token_file.empty()) {
    absl::StatusOr<std::unique_ptr<Authenticator>> auth = Authenticator::Create(
        {.admin_token_file = opts.admin_token_file,
         .inference_token_file = opts.inference_token_file});
    if (!auth.ok()) {
      return absl::Status(auth.status().code(),
                          absl::StrCat("token file: ", auth.status().message()));
    }
    server->auth_ = *std::move(auth);
  }
  absl::StatusOr<std::unique_ptr<ModelService>> model_service =
      ModelService::Create({.registry = server->registry_.get(),
                            .metrics = opts.metrics,
                            .routes = &server->routes_,
                            .auth = server->auth_.get()});
  if (!model_service.ok()) {
    return model_service.status();
  }
  server->model_service_ = *std::move(model_service);
  absl::StatusOr<std::unique_ptr<InferenceService>> inference_service =
      InferenceService::Create({.registry = server->registry_.get(),
                                .metrics = opts.metrics,
                                .routes = &server->routes_,
                                .auth = server->auth_.get(),
                                .limits = opts.limits,
                                .request_threads = opts.request_threads});
  if (!inference_service.ok()) {
    return inference_service.status();
  }
  server->inference_service_ = *std::move(inference_service);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(opts.tls);
  if (!credentials.ok()) return credentials.status();
  builder.AddListeningPort(opts.listen_address, *credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(opts.max_request_bytes);
  builder.RegisterService(server->model_service_.get());
  builder.RegisterService(server->inference_service_.get());
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on '", opts.listen_address, "'"));
  }
  if (!opts.health_listen_address.empty()) {
    // Only the default health service: EnableDefaultHealthCheckService gives every server
    // built from now on its own, which SetServing keeps in step with the main one.
    grpc::ServerBuilder health_builder;
    health_builder.AddListeningPort(opts.health_listen_address, grpc::InsecureServerCredentials(),
                                    &server->health_port_);
    server->health_server_ = health_builder.BuildAndStart();
    if (server->health_server_ == nullptr || server->health_port_ == 0) {
      server->grpc_server_->Shutdown();
      return absl::UnavailableError(
          absl::StrCat("cannot listen on '", opts.health_listen_address, "' (health port)"));
    }
  }
  {
    absl::MutexLock lock(&server->health_mu_);
    server->health_ = server->grpc_server_->GetHealthCheckService();
    if (server->health_server_ != nullptr) {
      server->plain_health_ = server->health_server_->GetHealthCheckService();
    }
  }

  if (opts.metrics != nullptr) {
    server->stats_thread_ = std::thread([raw] { raw->SampleStatsUntilShutdown(); });
  }
  for (const LoadRequest& request : startup) {
    std::string name = request.name;
    absl::Status started = server->registry_->StartLoad(
        request, nullptr, [name](const absl::StatusOr<ModelSnapshot>& outcome) {
          if (!outcome.ok()) {
            QS_LOG(ERROR) << "startup model failed to load; serving without it" << Kv("model", name)
                          << Kv("error", outcome.status().message());
          }
        });
    if (!started.ok()) {
      QS_LOG(ERROR) << "startup model not loaded" << Kv("model", name)
                    << Kv("error", started.message());
    }
  }
  return server;
}

Server::Server(Options options) : options_(std::move(options)) {}

Server::~Server() {
  if (grpc_server_ != nullptr) {
    Shutdown(absl::ZeroDuration());
  }
  // Otherwise Create failed part-way: the registry (if any) shuts itself down.
}

std::string Server::address() const {
  const std::string& listen = options_.listen_address;
  size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  return absl::StrCat(host, ":", port_);
}

void Server::SetServing(const std::string& name, bool serving) {
  absl::MutexLock lock(&health_mu_);
  for (grpc::HealthCheckServiceInterface* h : {health_, plain_health_}) {
    if (h != nullptr) h->SetServingStatus(name, serving);
  }
}

void Server::Wait() { shutdown_done_.WaitForNotification(); }

void Server::SampleStatsUntilShutdown() {
  while (!stop_stats_.WaitForNotificationWithTimeout(options_.stats_interval)) {
    for (const ModelSnapshot& snapshot : registry_->List()) {
      if (snapshot.state != ModelState::kReady) continue;
      absl::StatusOr<ModelHandle> handle = registry_->Acquire(snapshot.name);
      if (!handle.ok()) continue;  // unloading since List()
      const engine::ServingStats stats = handle->model().Stats();
      options_.metrics->SetKvCacheUsage(handle->labels(), stats.kv_cache_used_bytes,
                                        stats.kv_cache_budget_bytes);
    }
  }
}

void Server::Shutdown(absl::Duration drain_timeout) {
  bool first = false;
  {
    absl::MutexLock lock(&shutdown_mu_);
    first = !shutdown_started_;
    shutdown_started_ = true;
  }
  if (!first) {
    shutdown_done_.WaitForNotification();
    return;
  }
  const absl::Time deadline = absl::Now() + std::max(drain_timeout, absl::ZeroDuration());
  QS_LOG(INFO) << "shutting down"
               << Kv("drain_timeout_seconds", absl::ToDoubleSeconds(drain_timeout));
  {
    absl::MutexLock lock(&health_mu_);
    for (grpc::HealthCheckServiceInterface* h : {health_, plain_health_}) {
      if (h != nullptr) h->SetServingStatus(false);
    }
  }
  if (grpc_server_ != nullptr) {
    grpc_server_->Shutdown(absl::ToChronoTime(deadline));
  }
  if (health_server_ != nullptr) health_server_->Shutdown(absl::ToChronoTime(deadline));
  stop_stats_.Notify();
  if (stats_thread_.joinable()) stats_thread_.join();
  {
    absl::MutexLock lock(&health_mu_);
    health_ = nullptr;  // the registry's unloads below must not reach the stopped services
    plain_health_ = nullptr;
  }
  if (registry_ != nullptr) {
    registry_->Shutdown(std::max(deadline - absl::Now(), absl::ZeroDuration()));
  }
  QS_LOG(INFO) << "shutdown complete";
  shutdown_done_.Notify();
}

}  // namespace quantserve::server

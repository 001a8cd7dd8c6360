#include "server/model_service.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/byte_size.h"
#include "common/logging.h"
#include "server/routes.h"
#include "server/server_stream.h"
#include "server/status_conversion.h"

namespace quantserve::server {
namespace {

constexpr char kLoadModel[] = "LoadModel";
constexpr char kUnloadModel[] = "UnloadModel";
constexpr char kListModels[] = "ListModels";
constexpr char kGetModel[] = "GetModel";
constexpr char kSaveModel[] = "SaveModel";
constexpr char kSetRoute[] = "SetRoute";
constexpr char kDeleteRoute[] = "DeleteRoute";
constexpr char kListRoutes[] = "ListRoutes";

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

v1::ModelInfo::State ToProto(ModelState state) {
  switch (state) {
    case ModelState::kLoading:
      return v1::ModelInfo::LOADING;
    case ModelState::kReady:
      return v1::ModelInfo::READY;
    case ModelState::kUnloading:
      return v1::ModelInfo::UNLOADING;
    case ModelState::kFailed:
      return v1::ModelInfo::FAILED;
  }
  return v1::ModelInfo::STATE_UNSPECIFIED;
}

v1::ModelInfo::Task ToProto(engine::Task task) {
  switch (task) {
    case engine::Task::kGenerate:
      return v1::ModelInfo::GENERATE;
    case engine::Task::kEmbed:
      return v1::ModelInfo::EMBED;
  }
  return v1::ModelInfo::TASK_UNSPECIFIED;
}

void FillProgress(const engine::LoadProgress& progress, double elapsed_seconds,
                  v1::LoadModelProgress* out) {
  out->set_phase(progress.phase);
  out->set_tensors_done(progress.tensors_done);
  out->set_tensors_total(progress.tensors_total);
  out->set_bytes_done(progress.bytes_done);
  out->set_bytes_total(progress.bytes_total);
  out->set_elapsed_seconds(elapsed_seconds);
}

LoadRequest FromProto(const v1::LoadModelRequest& request) {
  LoadRequest out;
  out.name = request.name();
  out.path = request.path();
  out.quantization_config_json = request.quantization_config();
  out.dtype = request.dtype();
  out.device_map = request.device_map();
  out.max_memory_json = request.max_memory();
  out.num_threads = request.num_threads();
  out.calibration_texts.assign(request.calibration_texts().begin(),
                               request.calibration_texts().end());
  out.kernel_activations = request.kernel_activations();
  return out;
}

}  // namespace

v1::ModelInfo ToModelInfo(const ModelSnapshot& snapshot) {
  v1::ModelInfo info;
  info.set_name(snapshot.name);
  info.set_path(snapshot.path);
  info.set_state(ToProto(snapshot.state));
  info.set_reason(snapshot.reason);
  info.set_quant_method(snapshot.labels.quant_method);
  info.set_in_flight_requests(snapshot.in_flight);
  info.set_load_seconds(snapshot.load_elapsed_seconds);
  if (snapshot.description.has_value()) {
    const engine::ModelDescription& d = *snapshot.description;
    info.set_architecture(d.architecture);
    info.set_task(ToProto(d.task));
    info.set_quantization_config(d.quantization_config_json);
    info.set_dtype(d.dtype);
    info.set_device(d.device);
    info.set_memory_footprint_bytes(d.memory_footprint_bytes);
    info.set_parameters(d.parameters);
    info.set_peak_load_memory_bytes(d.peak_load_memory_bytes);
    info.set_vocab_size(d.vocab_size);
    info.set_max_position_embeddings(d.max_position_embeddings);
    info.set_default_pooling(d.default_pooling);
    for (const auto& [kernel, layers] : d.kernels) (*info.mutable_kernels())[kernel] = layers;
    info.set_max_batch_size(d.max_batch_size);
    info.set_kv_cache_budget_bytes(d.kv_cache_budget_bytes);
    info.set_deterministic(d.deterministic);
  }
  if (snapshot.state == ModelState::kLoading && snapshot.progress.has_value()) {
    v1::LoadProgress* p = info.mutable_load_progress();
    p->set_phase(snapshot.progress->phase);
    p->set_tensors_done(snapshot.progress->tensors_done);
    p->set_tensors_total(snapshot.progress->tensors_total);
    p->set_bytes_done(snapshot.progress->bytes_done);
    p->set_bytes_total(snapshot.progress->bytes_total);
    p->set_elapsed_seconds(snapshot.load_elapsed_seconds);
  }
  return info;
}

absl::StatusOr<std::unique_ptr<ModelService>> ModelService::Create(Options options) {
  if (options.registry == nullptr || options.metrics == nullptr) {
    return absl::InvalidArgumentError("ModelService: registry and metrics are required");
  }
  return std::unique_ptr<ModelService>(new ModelService(options));
}

void ModelService::FinishUnary(grpc::ServerUnaryReactor* reactor, const char* rpc, absl::Time start,
                               const ModelLabels& labels, const absl::Status& status) const {
  options_.metrics->RecordRequest(rpc, labels, status.code(), SecondsSince(start));
  reactor->Finish(ToGrpcStatus(status));
}

grpc::ServerWriteReactor<v1::LoadModelProgress>* ModelService::LoadModel(
    grpc::CallbackServerContext* context, const v1::LoadModelRequest* request) {
  const absl::Time start = absl::Now();
  // The labels the RPC's metrics use: known once the load has an outcome. The load thread
  // writes them while a cancelled RPC's finish hook may read them, hence the lock.
  struct Labels {
    absl::Mutex mu;
    ModelLabels value ABSL_GUARDED_BY(mu);
  };
  auto labels = std::make_shared<Labels>();
  ServerMetrics* metrics = options_.metrics;
  auto stream = ServerStream<v1::LoadModelProgress>::Create(
      context,
      {.on_cancel = nullptr, .on_finish = [metrics, labels, start](const absl::Status& status) {
         absl::MutexLock lock(&labels->mu);
         metrics->RecordRequest(kLoadModel, labels->value, status.code(), SecondsSince(start));
       }});
  if (absl::Status s = Authorize(options_.auth, context, kLoadModel); !s.ok()) {
    stream->Finish(std::move(s));
    return stream->reactor();
  }
  LoadRequest load = FromProto(*request);
  if (options_.routes != nullptr && options_.routes->Contains(load.name)) {
    stream->Finish(absl::AlreadyExistsError(
        absl::StrCat("name: '", load.name, "' is the name of a route")));
    return stream->reactor();
  }
  const ModelLabels accepted{.model = load.name,
                             .quant_method = RequestedQuantMethod(load.quantization_config_json)};
  absl::Status started = options_.registry->StartLoad(
      load,
      // Called on the load thread only. Every phase's first report is kept; later reports of
      // the same phase replace an unsent one, so a slow client sees every phase but the
      // queue stays short.
      [stream, last_phase = std::string()](const engine::LoadProgress& progress,
                                           double elapsed) mutable {
        v1::LoadModelProgress message;
        FillProgress(progress, elapsed, &message);
        if (progress.phase == last_phase) {
          stream->WriteLatest(std::move(message));
        } else {
          last_phase = progress.phase;
          stream->Write(std::move(message));
        }
      },
      [stream, labels, accepted](absl::StatusOr<ModelSnapshot> outcome) {
        {
          absl::MutexLock lock(&labels->mu);
          labels->value = outcome.ok() ? outcome->labels : accepted;
        }
        if (!outcome.ok()) {
          stream->Finish(outcome.status());
          return;
        }
        v1::LoadModelProgress last;
        if (outcome->progress.has_value()) {
          FillProgress(*outcome->progress, outcome->load_elapsed_seconds, &last);
        }
        last.set_phase("ready");
        last.set_elapsed_seconds(outcome->load_elapsed_seconds);
        *last.mutable_model() = ToModelInfo(*outcome);
        stream->Write(std::move(last));
        stream->Finish(absl::OkStatus());
      });
  if (!started.ok()) {
    stream->Finish(std::move(started));
  }
  return stream->reactor();
}

grpc::ServerUnaryReactor* ModelService::UnloadModel(grpc::CallbackServerContext* context,
                                                    const v1::UnloadModelRequest* request,
                                                    v1::UnloadModelResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authorize(options_.auth, context, kUnloadModel); !s.ok()) {
    FinishUnary(reactor, kUnloadModel, start, ModelLabels(), s);
    return reactor;
  }
  if (absl::Status s = ValidateModelName(request->name()); !s.ok()) {
    FinishUnary(reactor, kUnloadModel, start, ModelLabels(), s);
    return reactor;
  }
  if (!(request->drain_timeout_seconds() >= 0)) {
    FinishUnary(reactor, kUnloadModel, start, ModelLabels(),
                absl::InvalidArgumentError(absl::StrCat("drain_timeout_seconds: must be >= 0, got ",
                                                        request->drain_timeout_seconds())));
    return reactor;
  }
  absl::Duration drain_timeout = absl::Seconds(request->drain_timeout_seconds());
  if (drain_timeout == absl::ZeroDuration()) {
    drain_timeout = options_.registry->options().default_drain_timeout;
  }
  // The RPC's own deadline bounds the drain, leaving a moment to answer.
  const absl::Duration until_deadline =
      absl::FromChrono(context->deadline()) - absl::Now() - absl::Milliseconds(100);
  drain_timeout = std::max(std::min(drain_timeout, until_deadline), absl::Milliseconds(1));

  ModelLabels labels;
  if (absl::StatusOr<ModelSnapshot> snapshot = options_.registry->Get(request->name());
      snapshot.ok()) {
    labels = snapshot->labels;
  }
  absl::Status started = options_.registry->StartUnload(
      request->name(), drain_timeout,
      [this, reactor, response, start, labels](absl::StatusOr<UnloadResult> result) {
        if (result.ok()) {
          response->set_name(result->name);
          response->set_previous_state(ToProto(result->previous_state));
          response->set_seconds(result->seconds);
        }
        FinishUnary(reactor, kUnloadModel, start, labels, result.status());
      });
  if (!started.ok()) {
    FinishUnary(reactor, kUnloadModel, start, ModelLabels(), started);
  }
  return reactor;
}

grpc::ServerUnaryReactor* ModelService::ListModels(grpc::CallbackServerContext* context,
                                                   const v1::ListModelsRequest* request,
                                                   v1::ListModelsResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authorize(options_.auth, context, kListModels); !s.ok()) {
    FinishUnary(reactor, kListModels, start, ModelLabels(), s);
    return reactor;
  }
  for (const ModelSnapshot& snapshot : options_.registry->List()) {
    *response->add_models() = ToModelInfo(snapshot);
  }
  FinishUnary(reactor, kListModels, start, ModelLabels(), absl::OkStatus());
  return reactor;
}

grpc::ServerUnaryReactor* ModelService::GetModel(grpc::CallbackServerContext* context,
                                                 const v1::GetModelRequest* request,
                                                 v1::ModelInfo* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authorize(options_.auth, context, kGetModel); !s.ok()) {
    FinishUnary(reactor, kGetModel, start, ModelLabels(), s);
    return reactor;
  }
  if (absl::Status s = ValidateModelName(request->name()); !s.ok()) {
    FinishUnary(reactor, kGetModel, start, ModelLabels(), s);
    return reactor;
  }
  absl::StatusOr<ModelSnapshot> snapshot = options_.registry->Get(request->name());
  if (!snapshot.ok()) {
    FinishUnary(reactor, kGetModel, start, ModelLabels(), snapshot.status());
    return reactor;
  }
  *response = ToModelInfo(*snapshot);
  FinishUnary(reactor, kGetModel, start, snapshot->labels, absl::OkStatus());
  return reactor;
}

grpc::ServerUnaryReactor* ModelService::SaveModel(grpc::CallbackServerContext* context,
                                                  const v1::SaveModelRequest* request,
                                                  v1::SaveModelResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authorize(options_.auth, context, kSaveModel); !s.ok()) {
    FinishUnary(reactor, kSaveModel, start, ModelLabels(), s);
    return reactor;
  }
  if (absl::Status s = ValidateModelName(request->name()); !s.ok()) {
    FinishUnary(reactor, kSaveModel, start, ModelLabels(), s);
    return reactor;
  }
  int64_t max_shard_bytes = 0;
  if (!request->max_shard_size().empty()) {
    const auto bytes = common::ParseByteSize(request->max_shard_size());
    if (!bytes.has_value() || *bytes <= 0) {
      FinishUnary(reactor, kSaveModel, start, ModelLabels(),
                  absl::InvalidArgumentError(absl::StrCat(
                      "max_shard_size: must be a positive size like \"5GB\" or \"500MiB\" (got \"",
                      request->max_shard_size(), "\")")));
      return reactor;
    }
    max_shard_bytes = *bytes;
  }
  ModelLabels labels;
  if (absl::StatusOr<ModelSnapshot> snapshot = options_.registry->Get(request->name());
      snapshot.ok()) {
    labels = snapshot->labels;
  }
  absl::Status started = options_.registry->StartSave(
      request->name(), request->path(), max_shard_bytes,
      [this, reactor, response, start, labels](absl::StatusOr<ModelRegistry::SaveDone> done) {
        if (done.ok()) {
          response->set_path(done->path);
          response->set_bytes_written(done->result.bytes_written);
          for (const std::string& f : done->result.files) response->add_files(f);
          response->set_seconds(done->result.seconds);
        }
        FinishUnary(reactor, kSaveModel, start, labels, done.status());
      });
  if (!started.ok()) FinishUnary(reactor, kSaveModel, start, labels, started);
  return reactor;
}

grpc::ServerUnaryReactor* ModelService::SetRoute(grpc::CallbackServerContext* context,
                                                 const v1::SetRouteRequest* request,
                                                 v1::Route* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authorize(options_.auth, context, kSetRoute); !s.ok()) {
    FinishUnary(reactor, kSetRoute, start, ModelLabels(), s);
    return reactor;
  }
  if (options_.routes == nullptr) {
    FinishUnary(reactor, kSetRoute, start, ModelLabels(),
                absl::UnimplementedError("this server has no route table"));
    return reactor;
  }
  RouteSpec spec = FromProto(request->route());
  const std::string name = spec.name;
  absl::Status status =
      SetCheckedRoute(*options_.routes, *options_.registry, options_.metrics, std::move(spec));
  if (status.ok()) {
    absl::StatusOr<RouteSpec> stored = options_.routes->Get(name);
    if (stored.ok()) *response = ToProto(*stored, *options_.registry);
    QS_LOG(INFO) << "route set" << common::Kv("route", name)
                 << common::Kv("variants", response->variants_size());
  }
  FinishUnary(reactor, kSetRoute, start, ModelLabels(), status);
  return reactor;
}

grpc::ServerUnaryReactor* ModelService::DeleteRoute(grpc::CallbackServerContext* context,
                                                    const v1::DeleteRouteRequest* request,
                                                    v1::DeleteRouteResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authorize(options_.auth, context, kDeleteRoute); !s.ok()) {
    FinishUnary(reactor, kDeleteRoute, start, ModelLabels(), s);
    return reactor;
  }
  absl::Status status = options_.routes == nullptr
                            ? absl::UnimplementedError("this server has no route table")
                            : server::DeleteRoute(*options_.routes, options_.metrics,
                                                  request->name());
  if (status.ok()) {
    QS_LOG(INFO) << "route deleted" << common::Kv("route", request->name());
  }
  FinishUnary(reactor, kDeleteRoute, start, ModelLabels(), status);
  return reactor;
}

grpc::ServerUnaryReactor* ModelService::ListRoutes(grpc::CallbackServerContext* context,
                                                   const v1::ListRoutesRequest* request,
                                                   v1::ListRoutesResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authorize(options_.auth, context, kListRoutes); !s.ok()) {
    FinishUnary(reactor, kListRoutes, start, ModelLabels(), s);
    return reactor;
  }
  if (options_.routes != nullptr) {
    for (const RouteSpec& spec : options_.routes->List()) {
      *response->add_routes() = ToProto(spec, *options_.registry);
    }
  }
  FinishUnary(reactor, kListRoutes, start, ModelLabels(), absl::OkStatus());
  return reactor;
}

}  // namespace quantserve::server

#pragma once
// ModelService: the control plane (LoadModel, UnloadModel, ListModels, GetModel, SaveModel,
// and the routes: SetRoute, DeleteRoute, ListRoutes) over gRPC's callback API.
//
// A thin edge over ModelRegistry: each RPC validates, calls the registry, converts the final
// absl::Status once and records metrics. Nothing here blocks a gRPC thread: LoadModel streams
// progress from the registry's load thread through a ServerStream (coalescing reports within a
// phase, so a slow client cannot grow a queue) and ends with the model's ModelInfo; UnloadModel finishes
// from the registry's unload thread once the model has drained. A client that cancels a
// LoadModel gets CANCELLED at once, while the load itself runs to completion (loads cannot be
// interrupted; unload the model afterwards if it is not wanted).

#include <memory>

#include "absl/status/statusor.h"
#include "quantserve/v1/model_service.grpc.pb.h"
#include "server/auth.h"
#include "server/model_registry.h"
#include "server/route_table.h"
#include "server/server_metrics.h"

namespace quantserve::server {

// The public view of a registry snapshot.
v1::ModelInfo ToModelInfo(const ModelSnapshot& snapshot);

class ModelService final : public v1::ModelService::CallbackService {
 public:
  struct Options {
    // The models. Required; must outlive the service.
    ModelRegistry* registry = nullptr;
    // Where request metrics go. Required; must outlive the service.
    ServerMetrics* metrics = nullptr;
    // The routes (SetRoute/DeleteRoute/ListRoutes). Optional (route RPCs are then
    // UNIMPLEMENTED); must outlive the service.
    RouteTable* routes = nullptr;
    // Bearer-token checks (server/auth.h). Optional (null = every RPC open); must outlive
    // the service.
    Authenticator* auth = nullptr;
  };

  // Errors: INVALID_ARGUMENT when registry or metrics is missing.
  static absl::StatusOr<std::unique_ptr<ModelService>> Create(Options options);

  grpc::ServerWriteReactor<v1::LoadModelProgress>* LoadModel(
      grpc::CallbackServerContext* context, const v1::LoadModelRequest* request) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const v1::UnloadModelRequest* request,
                                        v1::UnloadModelResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* SaveModel(grpc::CallbackServerContext* context,
                                      const v1::SaveModelRequest* request,
                                      v1::SaveModelResponse* response) override;
  grpc::ServerUnaryReactor* SetRoute(grpc::CallbackServerContext* context,
                                     const v1::SetRouteRequest* request,
                                     v1::Route* response) override;
  grpc::ServerUnaryReactor* DeleteRoute(grpc::CallbackServerContext* context,
                                        const v1::DeleteRouteRequest* request,
                                        v1::DeleteRouteResponse* response) override;
  grpc::ServerUnaryReactor* ListRoutes(grpc::CallbackServerContext* context,
                                       const v1::ListRoutesRequest* request,
                                       v1::ListRoutesResponse* response) override;

 private:
  explicit ModelService(Options options) : options_(options) {}
  // Records the RPC's metrics and finishes `reactor` with `status`.
  void FinishUnary(grpc::ServerUnaryReactor* reactor, const char* rpc, absl::Time start,
                   const ModelLabels& labels, const absl::Status& status) const;

  const Options options_;
};

}  // namespace quantserve::server

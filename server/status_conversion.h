#pragma once
// The one place where absl::Status becomes grpc::Status.
//
// Everything below the gRPC services speaks absl::Status with canonical codes; the services
// call ToGrpcStatus exactly once, when they finish an RPC. Both worlds use the same canonical
// code numbers (google.rpc.Code), so the mapping is one-to-one; messages are truncated so an
// error cannot blow up trailers.

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace quantserve::server {

// Longest error message sent to clients; longer ones are cut and end in "...".
inline constexpr size_t kMaxGrpcStatusMessageBytes = 4096;

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace quantserve::server

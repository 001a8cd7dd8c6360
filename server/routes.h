#pragma once
// The glue between RouteTable (route_table.h), the model registry and the API: route changes
// checked against the models, and the proto form of a route with its variants' availability.
// Used by ModelService's route RPCs and by the startup config.

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quantserve/v1/model_service.pb.h"
#include "server/model_registry.h"
#include "server/route_table.h"
#include "server/server_metrics.h"

namespace quantserve::server {

// Creates or replaces `spec` after checking it against the registry: ALREADY_EXISTS when a
// model is named like the route; FAILED_PRECONDITION when the READY variants and the mirror
// do not all share one tokenizer (naming the first that differs); INVALID_ARGUMENT as
// RouteTable::Validate. Variants that are not loaded yet are allowed. Updates the route's
// weight gauges when `metrics` is set.
absl::Status SetCheckedRoute(RouteTable& routes, const ModelRegistry& registry,
                             ServerMetrics* metrics, RouteSpec spec);
// Removes a route and its gauges. Errors: NOT_FOUND.
absl::Status DeleteRoute(RouteTable& routes, ServerMetrics* metrics, absl::string_view name);

// The "routes" of a startup config (absent = none):
//   {"routes": [{"name": "chat", "variants": [{"model": "a", "weight": 3},
//                                             {"model": "b", "weight": 1}],
//                "mirror_model": "c", "mirror_percent": 10}]}
// Errors: INVALID_ARGUMENT naming the entry and field (RouteTable::Validate's checks too).
absl::StatusOr<std::vector<RouteSpec>> ParseStartupRoutes(absl::string_view json_text);

RouteSpec FromProto(const v1::Route& route);
// The route with each variant's (and the mirror's) current availability (READY).
v1::Route ToProto(const RouteSpec& spec, const ModelRegistry& registry);

}  // namespace quantserve::server

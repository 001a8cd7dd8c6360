#include "server/routes.h"

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/json_nesting.h"

namespace quantserve::server {
namespace {

bool IsReady(const ModelRegistry& registry, absl::string_view model) {
  absl::StatusOr<ModelSnapshot> s = registry.Get(model);
  return s.ok() && s->state == ModelState::kReady;
}

}  // namespace

absl::Status SetCheckedRoute(RouteTable& routes, const ModelRegistry& registry,
                             ServerMetrics* metrics, RouteSpec spec) {
  if (absl::Status s = RouteTable::Validate(spec); !s.ok()) return s;
  if (registry.Get(spec.name).ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("route.name: '", spec.name, "' is the name of a model"));
  }
  // Clients send text and token ids to a route: every variant must read them alike.
  std::vector<std::string> models;
  for (const RouteVariantSpec& v : spec.variants) models.push_back(v.model);
  if (!spec.mirror_model.empty()) models.push_back(spec.mirror_model);
  std::string first_model, first_fingerprint;
  for (const std::string& model : models) {
    absl::StatusOr<ModelSnapshot> s = registry.Get(model);
    if (!s.ok() || s->state != ModelState::kReady || !s->description.has_value()) continue;
    const std::string& fingerprint = s->description->tokenizer_fingerprint;
    if (first_model.empty()) {
      first_model = model;
      first_fingerprint = fingerprint;
    } else if (fingerprint != first_fingerprint) {
      return absl::FailedPreconditionError(absl::StrCat(
          "route '", spec.name, "': variant '", model, "' has a different tokenizer from '",
          first_model, "' (a route's variants must share one tokenizer)"));
    }
  }
  std::vector<std::pair<std::string, uint32_t>> weights;
  for (const RouteVariantSpec& v : spec.variants) weights.emplace_back(v.model, v.weight);
  const std::string name = spec.name;
  if (absl::Status s = routes.Set(std::move(spec)); !s.ok()) return s;
  if (metrics != nullptr) metrics->SetRouteWeights(name, weights);
  return absl::OkStatus();
}

absl::Status DeleteRoute(RouteTable& routes, ServerMetrics* metrics, absl::string_view name) {
  if (absl::Status s = routes.Delete(name); !s.ok()) return s;
  if (metrics != nullptr) metrics->RemoveRoute(name);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RouteSpec>> ParseStartupRoutes(absl::string_view json_text) {
  using nlohmann::json;
  if (absl::Status s = common::CheckJsonNesting("startup config", json_text); !s.ok()) return s;
  const json config = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError("startup config: must be a JSON object");
  }
  std::vector<RouteSpec> out;
  auto routes = config.find("routes");
  if (routes == config.end()) return out;
  if (!routes->is_array()) return absl::InvalidArgumentError("startup config: \"routes\" must be an array");
  const auto bad = [](const std::string& where, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
  };
  const auto uint = [](const json& v) {
    return v.is_number_unsigned() && v.get<uint64_t>() <= 0xFFFFFFFFull;
  };
  for (size_t i = 0; i < routes->size(); ++i) {
    const json& entry = (*routes)[i];
    const std::string where = absl::StrCat("startup config routes[", i, "]");
    if (!entry.is_object()) return bad(where, "must be an object");
    RouteSpec spec;
    for (const auto& [key, value] : entry.items()) {
      const std::string field = absl::StrCat(where, ".", key);
      if (key == "name" || key == "mirror_model") {
        if (!value.is_string()) return bad(field, "must be a string");
        (key == "name" ? spec.name : spec.mirror_model) = value.get<std::string>();
      } else if (key == "mirror_percent") {
        if (!uint(value)) return bad(field, "must be a non-negative integer");
        spec.mirror_percent = value.get<uint32_t>();
      } else if (key == "variants") {
        if (!value.is_array()) return bad(field, "must be an array");
        for (size_t j = 0; j < value.size(); ++j) {
          const json& v = value[j];
          const std::string vf = absl::StrCat(field, "[", j, "]");
          if (!v.is_object()) return bad(vf, "must be an object {\"model\", \"weight\"}");
          RouteVariantSpec variant;
          for (const auto& [vkey, vvalue] : v.items()) {
            if (vkey == "model" && vvalue.is_string()) {
              variant.model = vvalue.get<std::string>();
            } else if (vkey == "weight" && uint(vvalue)) {
              variant.weight = vvalue.get<uint32_t>();
            } else {
              return bad(absl::StrCat(vf, ".", vkey),
                         "unknown field, or model not a string / weight not a non-negative integer");
            }
          }
          spec.variants.push_back(std::move(variant));
        }
      } else {
        return bad(field, "unknown field (name, variants, mirror_model, mirror_percent)");
      }
    }
    if (absl::Status s = RouteTable::Validate(spec); !s.ok()) {
      return bad(where, s.message());
    }
    out.push_back(std::move(spec));
  }
  return out;
}

RouteSpec FromProto(const v1::Route& route) {
  RouteSpec spec;
  spec.name = route.name();
  for (const v1::RouteVariant& v : route.variants()) spec.variants.push_back({v.model(), v.weight()});
  spec.mirror_model = route.mirror_model();
  spec.mirror_percent = route.mirror_percent();
  return spec;
}

v1::Route ToProto(const RouteSpec& spec, const ModelRegistry& registry) {
  v1::Route out;
  out.set_name(spec.name);
  for (const RouteVariantSpec& v : spec.variants) {
    v1::RouteVariant* variant = out.add_variants();
    variant->set_model(v.model);
    variant->set_weight(v.weight);
    variant->set_available(IsReady(registry, v.model));
  }
  out.set_mirror_model(spec.mirror_model);
  out.set_mirror_percent(spec.mirror_percent);
  out.set_mirror_available(!spec.mirror_model.empty() && IsReady(registry, spec.mirror_model));
  return out;
}

}  // namespace quantserve::server

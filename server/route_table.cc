#include "server/route_table.h"

#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/stable_hash.h"
#include "server/load_request.h"

namespace quantserve::server {
namespace {

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

}  // namespace

absl::Status RouteTable::Validate(const RouteSpec& spec) {
  if (absl::Status s = ValidateModelName(spec.name, "route.name"); !s.ok()) return s;
  if (spec.variants.empty()) return FieldError("route.variants", "at least one variant is required");
  std::set<std::string, std::less<>> seen;
  uint64_t total = 0;
  for (size_t i = 0; i < spec.variants.size(); ++i) {
    const RouteVariantSpec& v = spec.variants[i];
    const std::string field = absl::StrCat("route.variants[", i, "].model");
    if (absl::Status s = ValidateModelName(v.model, field); !s.ok()) return s;
    if (v.model == spec.name) return FieldError(field, "a route cannot name itself");
    if (!seen.insert(v.model).second) {
      return FieldError(field, absl::StrCat("'", v.model, "' is listed twice"));
    }
    total += v.weight;
  }
  if (total == 0) return FieldError("route.variants", "at least one weight must be positive");
  if (spec.mirror_percent > 100) {
    return FieldError("route.mirror_percent", absl::StrCat(spec.mirror_percent, " is over 100"));
  }
  if (spec.mirror_model.empty() != (spec.mirror_percent == 0)) {
    return FieldError("route.mirror_percent",
                      "mirror_model and a positive mirror_percent go together");
  }
  if (!spec.mirror_model.empty()) {
    if (absl::Status s = ValidateModelName(spec.mirror_model, "route.mirror_model"); !s.ok()) {
      return s;
    }
    if (seen.count(spec.mirror_model) > 0 || spec.mirror_model == spec.name) {
      return FieldError("route.mirror_model",
                        absl::StrCat("'", spec.mirror_model, "' is also a variant of the route"));
    }
  }
  return absl::OkStatus();
}

absl::Status RouteTable::Set(RouteSpec spec) {
  if (absl::Status s = Validate(spec); !s.ok()) return s;
  Route route;
  route.current.assign(spec.variants.size(), 0);
  route.spec = std::move(spec);
  absl::MutexLock lock(&mu_);
  route.version = next_version_++;
  std::string name = route.spec.name;
  routes_.insert_or_assign(std::move(name), std::move(route));
  return absl::OkStatus();
}

absl::Status RouteTable::Delete(absl::string_view name) {
  absl::MutexLock lock(&mu_);
  auto it = routes_.find(name);
  if (it == routes_.end()) return absl::NotFoundError(absl::StrCat("no route named '", name, "'"));
  routes_.erase(it);
  return absl::OkStatus();
}

bool RouteTable::Contains(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  return routes_.find(name) != routes_.end();
}

absl::StatusOr<RouteSpec> RouteTable::Get(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = routes_.find(name);
  if (it == routes_.end()) return absl::NotFoundError(absl::StrCat("no route named '", name, "'"));
  return it->second.spec;
}

std::vector<RouteSpec> RouteTable::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<RouteSpec> out;
  out.reserve(routes_.size());
  for (const auto& [name, route] : routes_) out.push_back(route.spec);
  return out;
}

std::vector<std::string> RouteTable::RoutesUsing(absl::string_view model) const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [name, route] : routes_) {
    bool uses = route.spec.mirror_model == model;
    for (const RouteVariantSpec& v : route.spec.variants) uses = uses || v.model == model;
    if (uses) out.push_back(name);
  }
  return out;
}

int RouteTable::RendezvousIndex(absl::string_view key,
                                const std::vector<RouteVariantSpec>& variants,
                                const std::vector<bool>& eligible) {
  int best = -1;
  double best_score = 0;
  for (size_t i = 0; i < variants.size(); ++i) {
    if (variants[i].weight == 0 || (!eligible.empty() && !eligible[i])) continue;
    // u in (0, 1) from the top 53 bits; -ln(u) > 0.
    const double u = (static_cast<double>(common::StableHash64({key, variants[i].model}) >> 11) + 0.5) /
                     9007199254740992.0;
    const double score = static_cast<double>(variants[i].weight) / -std::log(u);
    if (best < 0 || score > best_score) {
      best = static_cast<int>(i);
      best_score = score;
    }
  }
  return best;
}

std::optional<absl::StatusOr<RouteChoice>> RouteTable::Pick(absl::string_view name,
                                                            absl::string_view routing_key,
                                                            const ReadyFn& ready) {
  // Readiness is asked outside the lock (it takes the registry's).
  std::optional<RouteSpec> spec;
  uint64_t version = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = routes_.find(name);
    if (it == routes_.end()) return std::nullopt;
    spec = it->second.spec;
    version = it->second.version;
  }
  std::vector<bool> eligible(spec->variants.size());
  bool any = false;
  for (size_t i = 0; i < eligible.size(); ++i) {
    eligible[i] = spec->variants[i].weight > 0 && ready(spec->variants[i].model);
    any = any || eligible[i];
  }
  if (!any) {
    return absl::StatusOr<RouteChoice>(absl::UnavailableError(
        absl::StrCat("route '", name, "': none of its variants is ready")));
  }
  const bool mirror_ready = !spec->mirror_model.empty() && ready(spec->mirror_model);

  RouteChoice choice;
  absl::MutexLock lock(&mu_);
  auto it = routes_.find(name);
  // Replaced or deleted meanwhile: the snapshot still answers this one request.
  Route* route = it != routes_.end() && it->second.version == version ? &it->second : nullptr;
  if (!routing_key.empty()) {
    choice.model = spec->variants[RendezvousIndex(routing_key, spec->variants, eligible)].model;
  } else if (route != nullptr) {
    int64_t total = 0;
    int best = -1;
    for (size_t i = 0; i < eligible.size(); ++i) {
      if (!eligible[i]) continue;
      route->current[i] += spec->variants[i].weight;
      total += spec->variants[i].weight;
      if (best < 0 || route->current[i] > route->current[best]) best = static_cast<int>(i);
    }
    route->current[best] -= total;
    choice.model = spec->variants[best].model;
  } else {
    for (size_t i = 0; i < eligible.size() && choice.model.empty(); ++i) {
      if (eligible[i]) choice.model = spec->variants[i].model;
    }
  }
  if (route != nullptr && spec->mirror_percent > 0) {
    route->mirror_credit += spec->mirror_percent;
    if (route->mirror_credit >= 100) {
      route->mirror_credit -= 100;
      if (mirror_ready) choice.mirror = spec->mirror_model;
    }
  }
  return absl::StatusOr<RouteChoice>(std::move(choice));
}

}  // namespace quantserve::server

#pragma once
// RouteTable: named routes that split traffic between model variants (A/B comparison).
//
// A route is a name clients use in place of a model name. It lists variants (loaded model
// names) with integer weights, and optionally a mirror model that also runs a share of the
// requests with its output discarded (only its metrics count), as Seldon's `mirror`.
//
// Choosing a variant for one request:
// * With a routing key: weighted rendezvous hashing (highest random weight: each variant
//   scores w / -ln(u), u a stable hash of key and variant in (0, 1); the highest wins). A key
//   lands on the same variant while the route and the variants' readiness are unchanged, and
//   across server restarts and replicas (the hash is fixed, not seeded). Changing weights
//   moves only keys that must move: raising one variant's weight moves keys to it and never
//   away from it; a variant that stops being ready gives its keys to the others and no other
//   key moves.
// * Without a key: smooth weighted round-robin (nginx's): every variant gains its weight, the
//   largest running total serves and loses the sum of the weights. Any window of requests
//   stays within one request per variant of the weights; 400 requests at 3:1 are exactly
//   300/100.
// Variants that are not ready are skipped and their weight shared by the others; a route
// with no ready variant is UNAVAILABLE. The mirror runs on every (100 / mirror_percent)-th
// request in a deterministic pattern (an accumulator, not a coin), when it is ready.
//
// The table knows nothing of models beyond the `ready` predicate it is given: name clashes
// with models and tokenizer compatibility are checked by its caller (ModelService).
//
// Thread-safety: every method may be called concurrently.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace quantserve::server {

struct RouteVariantSpec {
  std::string model;
  uint32_t weight = 0;
};

struct RouteSpec {
  std::string name;
  std::vector<RouteVariantSpec> variants;
  std::string mirror_model;     // empty: no mirror
  uint32_t mirror_percent = 0;  // 0..100
};

struct RouteChoice {
  std::string model;   // the variant that serves the request
  std::string mirror;  // run too, output discarded; empty when this request is not mirrored
};

class RouteTable {
 public:
  // Whether a model can take requests now (READY in the registry).
  using ReadyFn = std::function<bool(absl::string_view model)>;

  // INVALID_ARGUMENT naming the field: a bad route or variant name, no variants, a variant
  // listed twice, no positive weight, mirror_percent over 100, a mirror without a percent
  // (or the reverse), or a mirror that is also a variant.
  static absl::Status Validate(const RouteSpec& spec);

  // Creates or replaces `spec.name` (a replaced route starts its rotation afresh). Errors: as
  // Validate.
  absl::Status Set(RouteSpec spec);
  // Errors: NOT_FOUND.
  absl::Status Delete(absl::string_view name);
  bool Contains(absl::string_view name) const;
  // Errors: NOT_FOUND.
  absl::StatusOr<RouteSpec> Get(absl::string_view name) const;
  // Every route, sorted by name.
  std::vector<RouteSpec> List() const;
  // Routes naming `model` as a variant or mirror.
  std::vector<std::string> RoutesUsing(absl::string_view model) const;

  // nullopt when `name` is not a route. Otherwise the variant for one request (see the
  // header comment), or UNAVAILABLE when none of the route's variants is ready.
  std::optional<absl::StatusOr<RouteChoice>> Pick(absl::string_view name,
                                                  absl::string_view routing_key,
                                                  const ReadyFn& ready);

  // The variant index weighted rendezvous hashing picks for `key` among `variants`, looking
  // only at those with `eligible[i]` (all when empty) and a positive weight; -1 when none.
  static int RendezvousIndex(absl::string_view key, const std::vector<RouteVariantSpec>& variants,
                             const std::vector<bool>& eligible = {});

 private:
  struct Route {
    RouteSpec spec;
    std::vector<int64_t> current;  // smooth weighted round-robin totals, one per variant
    uint32_t mirror_credit = 0;    // accumulates mirror_percent per request
    uint64_t version = 0;          // distinguishes a replaced route from its predecessor
  };

  mutable absl::Mutex mu_;
  std::map<std::string, Route, std::less<>> routes_ ABSL_GUARDED_BY(mu_);
  uint64_t next_version_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace quantserve::server

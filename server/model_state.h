#pragma once
// The coarse lifecycle state of a model entry, as users see it (ModelInfo.State, the
// quantserve_model_state gauge). The numbers equal the proto enum's.
//
//   LOADING -> READY -> UNLOADING -> (gone)
//   LOADING -> FAILED -> (gone, on unload)

#include "absl/strings/string_view.h"

namespace quantserve::server {

enum class ModelState { kLoading = 1, kReady = 2, kUnloading = 3, kFailed = 4 };

// "LOADING", "READY", "UNLOADING", "FAILED".
constexpr absl::string_view ModelStateName(ModelState state) {
  switch (state) {
    case ModelState::kLoading:
      return "LOADING";
    case ModelState::kReady:
      return "READY";
    case ModelState::kUnloading:
      return "UNLOADING";
    case ModelState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

}  // namespace quantserve::server

#pragma once
// The torch-exception boundary. LibTorch reports errors by throwing c10::Error; every call
// into it that can fail on external input (shapes, dtypes, devices from a checkpoint or a
// request) runs inside TorchCall, which turns the exception into a Status naming `context`.
// Header-only so that `common` itself stays free of LibTorch; include it only from targets
// that link quantserve::torch.

#include <c10/util/Exception.h>

#include <exception>
#include <string>
#include <utility>

#include "absl/status/status.h"

namespace quantserve::common {

// Runs `fn` (returning void or absl::Status); c10::Error -> `code` with "context: what".
template <typename Fn>
absl::Status TorchCall(const std::string& context, Fn&& fn,
                       absl::StatusCode code = absl::StatusCode::kInternal) {
  try {
    if constexpr (std::is_same_v<decltype(fn()), absl::Status>) {
      return std::forward<Fn>(fn)();
    } else {
      std::forward<Fn>(fn)();
      return absl::OkStatus();
    }
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(context + ": out of device memory: " +
                                        e.what_without_backtrace());
  } catch (const c10::Error& e) {
    return absl::Status(code, context + ": " + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(context + ": out of memory");
  } catch (const std::exception& e) {
    return absl::Status(code, context + ": " + e.what());
  }
}

}  // namespace quantserve::common

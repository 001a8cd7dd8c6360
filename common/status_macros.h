#pragma once
// Status propagation macros. Errors are values (absl::Status); these add the one line of
// control flow every caller would otherwise repeat.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QS_STATUS_CONCAT_INNER_(a, b) a##b
#define QS_STATUS_CONCAT_(a, b) QS_STATUS_CONCAT_INNER_(a, b)

// Returns `expr` from the enclosing function if it is not OK.
#define QS_RETURN_IF_ERROR(expr)                   \
  do {                                             \
    ::absl::Status qs_status_ = (expr);            \
    if (!qs_status_.ok()) return qs_status_;       \
  } while (false)

// `QS_ASSIGN_OR_RETURN(auto x, MakeX());` assigns the value or returns the error.
#define QS_ASSIGN_OR_RETURN(lhs, rexpr) \
  QS_ASSIGN_OR_RETURN_IMPL_(QS_STATUS_CONCAT_(qs_statusor_, __LINE__), lhs, rexpr)
#define QS_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace quantserve::common {

// Returns `status` with `context` prepended to its message ("context: message"), same code.
inline absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " + std::string(status.message()));
}

}  // namespace quantserve::common

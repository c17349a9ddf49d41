#pragma once
// Status propagation helpers. abseil 20220623 ships no status macros, so the project keeps
// its own two (STYLE.md "Errors").

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QATD_STATUS_CONCAT_INNER_(a, b) a##b
#define QATD_STATUS_CONCAT_(a, b) QATD_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define QATD_RETURN_IF_ERROR(expr)                 \
  do {                                             \
    ::absl::Status qatd_status_ = (expr);          \
    if (!qatd_status_.ok()) return qatd_status_;   \
  } while (false)

// `QATD_ASSIGN_OR_RETURN(auto x, MakeX());` — declares/assigns the value of a StatusOr or
// returns its error from the enclosing function.
#define QATD_ASSIGN_OR_RETURN(lhs, expr) \
  QATD_ASSIGN_OR_RETURN_IMPL_(QATD_STATUS_CONCAT_(qatd_statusor_, __LINE__), lhs, expr)

#define QATD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

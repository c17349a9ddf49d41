#pragma once
// The one place where absl::Status becomes grpc::Status (STYLE.md "Errors"). Abseil's
// canonical codes and gRPC's share their numbering, so the mapping keeps code and message.

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "qatd/v1/job.pb.h"

namespace qatd::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace qatd::server

#pragma once
// `qat health`: asks qatd's standard gRPC health service (grpc.health.v1.Health/Check, served
// by grpc++ without the bearer token) whether the daemon serves. For container health checks,
// systemd and scripts: prints the status and exits 0 only when it is SERVING.

#include <CLI/CLI.hpp>
#include <string>

#include "client/connection.h"

namespace qatd::client {

struct HealthOptions {
  std::string service;  // "" = the whole server
};

// Adds the `health` subcommand to `app`; the caller runs RunHealth when it was parsed.
CLI::App* AddHealthCommand(CLI::App* app, HealthOptions* options);

// Exit codes: 0 SERVING, 1 any other status (qatd sets NOT_SERVING when it starts shutting down,
// SERVICE_UNKNOWN, an RPC error), 2 usage (unreadable --tls-ca / --token-file), 3 unreachable.
int RunHealth(const ConnectionOptions& connection, const HealthOptions& options, bool json);

}  // namespace qatd::client

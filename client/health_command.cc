#include "client/health_command.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "grpc/health/v1/health.grpc.pb.h"

namespace qatd::client {
namespace {

const char* StatusName(grpc::health::v1::HealthCheckResponse::ServingStatus status) {
  switch (status) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return "SERVING";
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return "NOT_SERVING";
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return "SERVICE_UNKNOWN";
    default:
      return "UNKNOWN";
  }
}

// The same channel as Connection's (TLS when --tls-ca is set), for the Health stub.
std::shared_ptr<grpc::Channel> HealthChannel(const ConnectionOptions& o) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  if (!o.tls_ca.empty()) {
    std::ifstream in(o.tls_ca, std::ios::binary);
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    credentials = grpc::SslCredentials(ssl);
    if (!o.tls_server_name.empty()) args.SetSslTargetNameOverride(o.tls_server_name);
  }
  return grpc::CreateCustomChannel(o.address, credentials, args);
}

}  // namespace

CLI::App* AddHealthCommand(CLI::App* app, HealthOptions* options) {
  CLI::App* health = app->add_subcommand(
      "health", "Is the daemon serving? (gRPC health service; exit 0 only when SERVING)");
  health->add_option("--service", options->service, "A service name to ask about (default: the whole server)");
  health->footer(
      "Example (a container HEALTHCHECK):\n  qat health --address 127.0.0.1:7433 --timeout 3\n"
      "Exit codes: 0 SERVING, 1 NOT_SERVING (shutting down) or another status, 3 cannot reach qatd.\n");
  return health;
}

int RunHealth(const ConnectionOptions& connection_options, const HealthOptions& options, bool json) {
  Connection connection(connection_options);  // reads --token-file / --tls-ca, reports failures
  if (!connection.ok()) return connection.exit_code();
  auto stub = grpc::health::v1::Health::NewStub(HealthChannel(connection_options));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(options.service);
  grpc::health::v1::HealthCheckResponse response;
  std::unique_ptr<grpc::ClientContext> context = connection.UnaryContext();
  const grpc::Status status = stub->Check(context.get(), request, &response);
  if (!status.ok()) return connection.Report(status);
  const char* name = StatusName(response.status());
  if (json) {
    std::printf("{\"status\":\"%s\"}\n", name);
  } else {
    std::printf("%s\n", name);
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitFailed;
}

}  // namespace qatd::client

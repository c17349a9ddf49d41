#pragma once
// How `qat` reaches qatd: address, bearer token, TLS, deadlines; and the one place where a
// failed RPC becomes a message and an exit code.
//
// Exit codes (every `qat` command): 0 ok, 1 job failed / RPC error, 2 usage or validation
// error (local flag checks and the daemon's INVALID_ARGUMENT), 3 cannot reach the daemon.

#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "qatd/v1/service.grpc.pb.h"

namespace qatd::client {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// qatd's default --listen (server/daemon_options.h).
inline constexpr char kDefaultAddress[] = "127.0.0.1:7433";

struct ConnectionOptions {
  std::string address = kDefaultAddress;  // --address / $QATD_ADDRESS
  std::string token;                      // --token / $QATD_TOKEN
  std::string token_file;                 // --token-file
  std::string tls_ca;                     // --tls-ca: PEM roots; TLS when set
  std::string tls_server_name;            // --tls-server-name: expected name in the certificate
  double timeout_s = 30;                  // --timeout: deadline of every unary call
};

// Adds --address, --token, --token-file, --tls-ca, --tls-server-name, --timeout to `app`.
void AddConnectionFlags(CLI::App* app, ConnectionOptions* options);

// A channel and stub to one daemon. Not thread-safe for Context() creation, but stubs are.
class Connection {
 public:
  // Reads the token file / CA file; a failure is reported on stderr and exit_code() is 2.
  explicit Connection(ConnectionOptions options);

  bool ok() const { return exit_code_ == kExitOk; }
  int exit_code() const { return exit_code_; }
  const ConnectionOptions& options() const { return options_; }
  v1::Qatd::Stub& stub() { return *stub_; }

  // A context for a unary call: deadline (--timeout) and the bearer token.
  std::unique_ptr<grpc::ClientContext> UnaryContext() const;
  // A context for a stream: no deadline (the stream ends with the job), the bearer token.
  std::unique_ptr<grpc::ClientContext> StreamContext() const;

  // Prints a one-line message for a failed call to stderr and returns the exit code:
  // UNAVAILABLE -> "cannot reach qatd at ADDR: is the daemon running? ..." (3),
  // DEADLINE_EXCEEDED -> (3), UNAUTHENTICATED -> a hint about the token (1),
  // INVALID_ARGUMENT -> the daemon's message as is (2), others -> "CODE: message" (1).
  int Report(const grpc::Status& status) const;

  // For INVALID_ARGUMENT: maps the daemon's message (which starts with the field path, e.g.
  // "spec.kd_cache.dataset is required") to a suffix naming the flag, or "".
  void set_invalid_argument_hint(std::function<std::string(const std::string&)> hint) { hint_ = std::move(hint); }

 private:
  ConnectionOptions options_;
  std::string token_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Qatd::Stub> stub_;
  int exit_code_ = kExitOk;
  std::function<std::string(const std::string&)> hint_;
};

// "INVALID_ARGUMENT", "NOT_FOUND", ... for a gRPC status code.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace qatd::client

#include "client/connection.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace qatd::client {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  *out = text.str();
  return true;
}

std::string Seconds(double s) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", s);
  return buffer;
}

}  // namespace

void AddConnectionFlags(CLI::App* app, ConnectionOptions* o) {
  app->add_option("--address", o->address, "qatd's gRPC address HOST:PORT (env QATD_ADDRESS)")
      ->envname("QATD_ADDRESS")
      ->capture_default_str();
  app->add_option("--token", o->token, "Bearer token (env QATD_TOKEN)")->envname("QATD_TOKEN");
  app->add_option("--token-file", o->token_file, "File holding the bearer token (wins over QATD_TOKEN)");
  app->add_option("--tls-ca", o->tls_ca, "PEM CA certificate(s): connect with TLS and trust these roots");
  app->add_option("--tls-server-name", o->tls_server_name,
                  "With --tls-ca: the name the server's certificate must carry (default: the address' host)");
  app->add_option("--timeout", o->timeout_s, "Deadline of every non-streaming call, in seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
}

Connection::Connection(ConnectionOptions options) : options_(std::move(options)) {
  token_ = options_.token;
  if (!options_.token_file.empty()) {
    std::string text;
    if (!ReadFile(options_.token_file, &text)) {
      std::fprintf(stderr, "qat: --token-file: cannot read %s\n", options_.token_file.c_str());
      exit_code_ = kExitUsage;
      return;
    }
    token_ = std::string(absl::StripAsciiWhitespace(text));
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  // Notice a vanished daemon host on long streams. The server's default ping policy allows
  // one ping per 5 minutes without data, so stay at that.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 300000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options_.tls_ca.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    if (!ReadFile(options_.tls_ca, &ssl.pem_root_certs)) {
      std::fprintf(stderr, "qat: --tls-ca: cannot read %s\n", options_.tls_ca.c_str());
      exit_code_ = kExitUsage;
      return;
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options_.tls_server_name.empty()) args.SetSslTargetNameOverride(options_.tls_server_name);
  }
  channel_ = grpc::CreateCustomChannel(options_.address, credentials, args);
  stub_ = v1::Qatd::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> Connection::UnaryContext() const {
  auto context = StreamContext();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_s * 1000)));
  return context;
}

std::unique_ptr<grpc::ClientContext> Connection::StreamContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
  return context;
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return absl::StrCat("code ", static_cast<int>(code));
  }
}

int Connection::Report(const grpc::Status& status) const {
  const std::string& address = options_.address;
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::UNAVAILABLE:
      std::fprintf(stderr,
                   "qat: cannot reach qatd at %s: is the daemon running? (start it with: qatd --data-dir ~/.qatd; "
                   "or point --address / QATD_ADDRESS at it) [%s]\n",
                   address.c_str(), status.error_message().c_str());
      return kExitUnreachable;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      std::fprintf(stderr,
                   "qat: qatd at %s did not answer within %s s (--timeout): is the address right and the daemon "
                   "running?\n",
                   address.c_str(), Seconds(options_.timeout_s).c_str());
      return kExitUnreachable;
    case grpc::StatusCode::UNAUTHENTICATED:
      std::fprintf(stderr,
                   "qat: qatd at %s rejected the call: %s. Pass the daemon's token with --token, --token-file or "
                   "QATD_TOKEN.\n",
                   address.c_str(), status.error_message().c_str());
      return kExitFailed;
    case grpc::StatusCode::INVALID_ARGUMENT:
      std::fprintf(stderr, "qat: %s%s\n", status.error_message().c_str(),
                   hint_ ? hint_(status.error_message()).c_str() : "");
      return kExitUsage;
    default:
      std::fprintf(stderr, "qat: %s: %s\n", StatusCodeName(status.error_code()).c_str(),
                   status.error_message().c_str());
      return kExitFailed;
  }
}

}  // namespace qatd::client

#include "worker/grpc_reporter.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace qatd::worker {
namespace {

std::chrono::system_clock::time_point After(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcReporter>> GrpcReporter::Connect(const GrpcReporterOptions& options,
                                                                     jobs::CancelToken* cancel) {
  if (options.daemon_address.empty()) return absl::InvalidArgumentError("the daemon address is required");
  if (options.job_id <= 0) return absl::InvalidArgumentError("the job id is required for the gRPC transport");
  if (options.secret.empty()) return absl::InvalidArgumentError("QATD_JOB_SECRET is not set");
  if (!(options.daemon_timeout_seconds > 0)) return absl::InvalidArgumentError("daemon_timeout_seconds must be > 0");
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.ca_file.empty()) {
    absl::StatusOr<std::string> roots = ReadFile(options.ca_file);
    if (!roots.ok()) return roots.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *roots;
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments arguments;
  // Notice a silent daemon (host gone, network cut) within ~20 s, even between events.
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  arguments.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
  auto channel = grpc::CreateCustomChannel(options.daemon_address, credentials, arguments);
  if (!channel->WaitForConnected(After(options.daemon_timeout_seconds))) {
    return absl::UnavailableError(absl::StrCat("cannot reach the daemon at ", options.daemon_address, " within ",
                                               options.daemon_timeout_seconds, " s"));
  }
  return std::unique_ptr<GrpcReporter>(new GrpcReporter(options, cancel, std::move(channel)));
}

GrpcReporter::GrpcReporter(const GrpcReporterOptions& options, jobs::CancelToken* cancel,
                           std::shared_ptr<grpc::Channel> channel)
    : EventReporter(cancel), options_(options), cancel_(cancel), channel_(std::move(channel)) {
  stub_ = v1::WorkerChannel::NewStub(channel_);
  context_.AddMetadata("x-qatd-job-id", std::to_string(options_.job_id));
  context_.AddMetadata("x-qatd-job-secret", options_.secret);
  stream_ = stub_->Attach(&context_);
  reader_ = std::thread([this] { ReadControls(); });
}

GrpcReporter::~GrpcReporter() {
  if (!closed_) {
    absl::Status closed = Close();
    if (!closed.ok()) std::fprintf(stderr, "qatd-worker: %s\n", closed.ToString().c_str());
  }
  if (reader_.joinable()) reader_.join();
}

void GrpcReporter::ReadControls() {
  v1::WorkerControl control;
  while (stream_->Read(&control)) {
    if (control.cancel() && cancel_ != nullptr) {
      std::fprintf(stderr, "qatd-worker: the daemon cancels the job (%s)\n", control.reason().c_str());
      cancel_->Cancel();
    }
    if (control.has_session()) session_inbox()->Push(control.session());
  }
  session_inbox()->Close();
  {
    std::lock_guard<std::mutex> lock(mu_);
    reads_done_ = true;
  }
  cv_.notify_all();
  // The call ended before our final event: the daemon is gone (or refused us).
  if (!closed_) MarkLost();
}

void GrpcReporter::MarkLost() {
  // Once, whichever side notices first (a failed write or the end of the call): stop the job;
  // if it does not stop in time, stop the process.
  if (lost_.exchange(true)) return;
  std::fprintf(stderr, "qatd-worker: lost the daemon at %s; stopping the job\n", options_.daemon_address.c_str());
  if (cancel_ != nullptr) cancel_->Cancel();
  const double timeout = options_.daemon_timeout_seconds;
  std::thread([timeout] {
    std::this_thread::sleep_for(std::chrono::duration<double>(timeout));
    std::fprintf(stderr, "qatd-worker: the job did not stop within %.0f s of losing the daemon; exiting\n", timeout);
    std::fflush(stderr);
    ::_exit(3);
  }).detach();
}

absl::Status GrpcReporter::Deliver(const v1::WorkerEvent& event) {
  if (lost_ || closed_) return absl::UnavailableError("the daemon's WorkerChannel stream is closed");
  if (!stream_->Write(event)) {
    MarkLost();
    return absl::UnavailableError(absl::StrCat("cannot send to the daemon at ", options_.daemon_address));
  }
  if (event.has_final()) return Close();
  return absl::OkStatus();
}

absl::Status GrpcReporter::Close() {
  closed_ = true;
  (void)stream_->WritesDone();
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, After(options_.daemon_timeout_seconds), [this] { return reads_done_; })) {
      context_.TryCancel();
      cv_.wait(lock, [this] { return reads_done_; });
    }
  }
  if (reader_.joinable()) reader_.join();
  grpc::Status status = stream_->Finish();
  if (status.ok()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("the daemon ended the WorkerChannel call: ", status.error_message()));
}

}  // namespace qatd::worker

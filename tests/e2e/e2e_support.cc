#include "tests/e2e/e2e_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace qatd::e2e {

bool PollUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

v1::Job SubmitTo(const Daemon& daemon, const v1::JobSpec& spec) {
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::Job job;
  grpc::Status status = daemon.Stub()->SubmitJob(daemon.Context().get(), request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

v1::Job GetJobFrom(const Daemon& daemon, int64_t id) {
  v1::GetJobRequest request;
  request.set_job_id(id);
  v1::Job job;
  grpc::Status status = daemon.Stub()->GetJob(daemon.Context().get(), request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

v1::Job WaitForJob(const Daemon& daemon, int64_t id, const std::function<bool(const v1::Job&)>& done,
                   std::chrono::milliseconds timeout) {
  v1::Job job;
  EXPECT_TRUE(PollUntil(
      [&] {
        job = GetJobFrom(daemon, id);
        return done(job);
      },
      timeout))
      << "job " << id << " last seen as " << job.ShortDebugString();
  return job;
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::string& log_file) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int log = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = ::fork();
  if (pid_ == 0) {
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  if (log >= 0) ::close(log);
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    Wait(std::chrono::seconds(30));
  }
}

bool ChildProcess::running() {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return true;
}

void ChildProcess::Signal(int signal) {
  if (running()) ::kill(pid_, signal);
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (PollUntil([&] { return !running(); }, timeout)) return status_;
  return std::nullopt;
}

namespace {
std::atomic<int> g_token_files{0};
}  // namespace

Daemon::Daemon(DaemonConfig config) : config_(std::move(config)) {}

Daemon::~Daemon() {
  if (process_ && process_->running()) Stop();
}

bool Daemon::Start() {
  std::vector<std::string> argv = {QATD_BINARY,
                                   "--listen", config_.listen,
                                   "--metrics-address", "127.0.0.1:0",
                                   "--data-dir", config_.data_dir,
                                   "--max-concurrent-jobs", std::to_string(config_.max_concurrent_jobs),
                                   "--cancel-grace-seconds", std::to_string(config_.cancel_grace_seconds)};
  ::mkdir(config_.data_dir.c_str(), 0755);
  if (!config_.token.empty()) {
    token_file_ = config_.data_dir + ".token-" + std::to_string(++g_token_files);
    std::ofstream(token_file_) << config_.token << "\n";
    argv.push_back("--token-file");
    argv.push_back(token_file_);
  }
  if (!config_.tls_cert.empty()) {
    argv.insert(argv.end(), {"--tls-cert", config_.tls_cert, "--tls-key", config_.tls_key});
  }
  argv.insert(argv.end(), config_.extra_args.begin(), config_.extra_args.end());
  const std::string port_file = config_.data_dir + "/qatd.port";
  ::unlink(port_file.c_str());
  process_ = std::make_unique<ChildProcess>(argv, config_.data_dir + ".out");
  bool up = PollUntil(
      [&] {
        if (!process_->running()) return true;
        std::string text = ReadFileOrEmpty(port_file);
        return !text.empty() && text.back() == '\n';
      },
      std::chrono::seconds(60));
  port_ = std::atoi(ReadFileOrEmpty(port_file).c_str());
  metrics_port_ = std::atoi(ReadFileOrEmpty(config_.data_dir + "/metrics.port").c_str());
  if (!up || port_ <= 0 || !process_->running()) {
    std::cerr << "qatd did not come up; log tail:\n" << LogTail() << std::endl;
    return false;
  }
  return true;
}

std::string Daemon::LogTail() const {
  std::string log = ReadFileOrEmpty(config_.data_dir + "/qatd.log");
  return log.size() > 4000 ? log.substr(log.size() - 4000) : log;
}

std::optional<int> Daemon::Stop() {
  if (!process_) return std::nullopt;
  process_->Signal(SIGTERM);
  std::optional<int> status = process_->Wait(std::chrono::seconds(30));
  if (!status.has_value()) {
    process_->Signal(SIGKILL);
    status = process_->Wait(std::chrono::seconds(30));
  }
  return status;
}

void Daemon::Kill9() {
  if (!process_) return;
  process_->Signal(SIGKILL);
  process_->Wait(std::chrono::seconds(30));
}

std::shared_ptr<grpc::Channel> Daemon::Channel() const {
  const std::string target = "127.0.0.1:" + std::to_string(port_);
  if (config_.tls_cert.empty()) return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFileOrEmpty(config_.tls_cert);  // self-signed: the cert is its own root
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

std::unique_ptr<v1::Qatd::Stub> Daemon::Stub() const { return v1::Qatd::NewStub(Channel()); }

std::unique_ptr<grpc::ClientContext> Daemon::Context(std::chrono::milliseconds deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + deadline);
  if (!config_.token.empty()) context->AddMetadata("authorization", "Bearer " + config_.token);
  return context;
}

std::optional<std::string> HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return std::nullopt;
  }
  std::string response;
  char buffer[8192];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, static_cast<size_t>(n));
  ::close(fd);
  const size_t header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos || response.compare(0, 12, "HTTP/1.0 200") != 0) {
    if (header_end == std::string::npos || response.compare(0, 12, "HTTP/1.1 200") != 0) return std::nullopt;
  }
  return response.substr(header_end + 4);
}

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string TinyModelDir() { return std::string(QATD_TEST_DATA) + "/golden/tiny-qwen3"; }
std::string TinyTokenizerDir() { return std::string(QATD_TEST_DATA) + "/golden/qwen3-tokenizer"; }

std::string MakeTinyKdCache(const Daemon& daemon, const qatd::testing::TempDir& dir, int num_sequences) {
  const std::string dataset = dir.File("kd.txt");
  {
    std::ofstream out(dataset);
    for (int i = 0; i < 200; ++i) out << "Line " << i << " tells of a river, " << i * 3 << " stones and a small boat.\n";
  }
  v1::JobSpec spec;
  v1::KdCacheSpec* kd = spec.mutable_kd_cache();
  kd->set_teacher_model(TinyModelDir());
  kd->set_tokenizer(TinyTokenizerDir());
  kd->set_dataset(dataset);
  kd->set_max_length(16);
  kd->set_topk(8);
  kd->set_num_sequences(num_sequences);
  kd->set_batch_size(8);
  kd->set_dtype(v1::DTYPE_FP32);
  v1::Job job = RunToEnd(daemon, spec, std::chrono::seconds(300));
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.ShortDebugString();
  for (const auto& a : job.artifacts()) {
    if (a.kind() == "kd_cache") return a.path();
  }
  return "";
}

}  // namespace qatd::e2e

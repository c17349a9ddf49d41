#include "server/daemon.h"

#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/exposer.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/file_util.h"
#include "server/auth.h"
#include "server/device_discovery.h"
#include "server/device_pool.h"
#include "server/event_hub.h"
#include "server/job_journal.h"
#include "server/logging.h"
#include "server/metrics.h"
#include "server/qatd_service.h"
#include "server/scheduler.h"
#include "server/version.h"
#include "server/worker_channel.h"
#include "server/worker_launcher.h"
#include "spdlog/spdlog.h"
#include "storage/job_store.h"

namespace qatd::server {
namespace fs = std::filesystem;
namespace {

// Holds an exclusive flock on <data-dir>/qatd.lock for the life of the process: the store has
// a single writer.
absl::StatusOr<int> LockDataDir(const std::string& data_dir) {
  const std::string path = data_dir + "/qatd.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return absl::FailedPreconditionError(absl::StrCat("cannot open ", path));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat("another qatd is using ", data_dir, " (", path, " is locked)"));
  }
  return fd;
}

absl::StatusOr<std::string> LoadToken(const DaemonOptions& options) {
  if (!options.token_file.empty()) return ReadTokenFile(options.token_file);
  const char* env = std::getenv("QATD_TOKEN");
  return std::string(env != nullptr ? env : "");
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const DaemonOptions& options) {
  if (options.tls_cert.empty()) return grpc::InsecureServerCredentials();
  QATD_ASSIGN_OR_RETURN(std::string cert, ReadFile(options.tls_cert));
  QATD_ASSIGN_OR_RETURN(std::string key, ReadFile(options.tls_key));
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(ssl);
}

// Samples GPU memory for the device pool and qatd_gpu_memory_bytes until stopped.
class GpuMonitor {
 public:
  GpuMonitor(DevicePool* pool, DaemonMetrics* metrics, double period_s)
      : pool_(pool), metrics_(metrics), period_(std::chrono::duration<double>(period_s)) {}
  ~GpuMonitor() { Stop(); }
  void Start() { thread_ = std::thread([this] { Loop(); }); }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      lock.unlock();
      std::vector<GpuInfo> gpus = DiscoverGpus();
      pool_->UpdateMemory(gpus);
      for (const GpuInfo& gpu : gpus) {
        metrics_->GpuMemory(std::to_string(gpu.index), gpu.memory_total_bytes - gpu.memory_free_bytes,
                            gpu.memory_total_bytes);
      }
      lock.lock();
      cv_.wait_for(lock, period_, [this] { return stop_; });
    }
  }

  DevicePool* pool_;
  DaemonMetrics* metrics_;
  std::chrono::duration<double> period_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Blocks until SIGTERM or SIGINT (blocked in every thread by RunDaemon) arrives.
int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int signal = 0;
  while (sigwait(&set, &signal) != 0) {
  }
  return signal;
}

// Where a worker on this host reaches the daemon: the listen host (loopback for a wildcard
// address) and the bound port.
std::string WorkerAddress(const std::string& listen, int port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") host = "127.0.0.1";
  return absl::StrCat(host, ":", port);
}

int Fail(const absl::Status& status) {
  spdlog::critical("qatd: {}", status.ToString());
  return 1;
}

}  // namespace

int RunDaemon(const DaemonOptions& options) {
  // Before any thread exists: termination signals are taken by sigwait() below, and a write to
  // a closed socket must not kill the daemon.
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::error_code ec;
  fs::create_directories(options.data_dir, ec);
  if (ec) return Fail(absl::FailedPreconditionError(absl::StrCat("cannot create ", options.data_dir, ": ", ec.message())));
  const std::string data_dir = fs::canonical(options.data_dir, ec).string();
  absl::StatusOr<int> lock_fd = LockDataDir(data_dir);
  if (!lock_fd.ok()) return Fail(lock_fd.status());
  if (absl::Status logging = InitDaemonLogging(data_dir); !logging.ok()) return Fail(logging);
  spdlog::info("qatd {} starting (pid {}), data dir {}", kQatdVersion, ::getpid(), data_dir);
  ::unlink((data_dir + "/qatd.port").c_str());
  ::unlink((data_dir + "/metrics.port").c_str());

  absl::StatusOr<std::string> token = LoadToken(options);
  if (!token.ok()) return Fail(token.status());
  BearerTokenAuth auth(*token);
  if (!auth.enabled()) spdlog::warn("no bearer token configured (--token-file / QATD_TOKEN): RPCs are not authenticated");
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeCredentials(options);
  if (!credentials.ok()) return Fail(credentials.status());

  absl::StatusOr<std::string> worker_binary = FindWorkerBinary(options.worker_binary, "/proc/self/exe");
  if (!worker_binary.ok()) return Fail(worker_binary.status());
  spdlog::info("workers: {} ({} transport)", *worker_binary, options.worker_transport);

  absl::StatusOr<std::unique_ptr<storage::JobStore>> store = storage::JobStore::Open(data_dir + "/qatd.db");
  if (!store.ok()) return Fail(store.status());

  const std::vector<GpuInfo> gpus = DiscoverGpus();
  DevicePool devices(gpus, options.max_concurrent_jobs);
  if (gpus.empty()) {
    spdlog::info("no CUDA devices found: jobs run on the CPU, {} at a time", options.max_concurrent_jobs);
  } else {
    for (const GpuInfo& gpu : gpus) {
      spdlog::info("GPU {}: {} MiB total, {} MiB free", gpu.index, gpu.memory_total_bytes >> 20,
                   gpu.memory_free_bytes >> 20);
    }
  }

  DaemonMetrics metrics;
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(options.metrics_address);
  } catch (const std::exception& e) {
    return Fail(absl::FailedPreconditionError(absl::StrCat("cannot serve /metrics on ", options.metrics_address, ": ", e.what())));
  }
  exposer->RegisterCollectable(metrics.registry());
  const std::vector<int> metrics_ports = exposer->GetListeningPorts();
  const int metrics_port = metrics_ports.empty() ? 0 : metrics_ports.front();

  EventHub hub;
  SystemClock clock;
  JobJournal journal(store->get(), &hub, &metrics, &clock);
  WorkerChannelService worker_channel;
  ExecWorkerOptions launcher_options;
  launcher_options.executable = *worker_binary;
  launcher_options.transport = options.worker_transport;
  launcher_options.daemon_ca_file = options.tls_cert;
  launcher_options.channel = &worker_channel;
  SchedulerOptions scheduler_options;
  scheduler_options.jobs_dir = data_dir + "/jobs";
  scheduler_options.cancel_grace_ms = static_cast<int64_t>(options.cancel_grace_seconds * 1000);
  ExecWorkerLauncher launcher(launcher_options);
  Scheduler scheduler(scheduler_options, &journal, &devices, &launcher, &metrics);

  ServiceContext service_context;
  service_context.scheduler = &scheduler;
  service_context.store = store->get();
  service_context.hub = &hub;
  service_context.devices = &devices;
  service_context.auth = &auth;
  service_context.data_dir = data_dir;
  service_context.start_time_ms = clock.NowMs();
  QatdService service(service_context);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(options.listen, *credentials, &grpc_port);
  builder.RegisterService(&service);
  builder.RegisterService(&worker_channel);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcMetricsInterceptorFactory>(&metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen)));
  }
  // Workers reach the daemon on the port it bound (the gRPC transport); jobs start only now.
  launcher.set_daemon_address(WorkerAddress(options.listen, grpc_port));
  if (absl::Status started = scheduler.Start(); !started.ok()) {
    server->Shutdown();
    return Fail(started);
  }
  // metrics.port first: qatd.port appearing means the daemon is fully up.
  if (absl::Status written = WriteFileAtomically(data_dir + "/metrics.port", absl::StrCat(metrics_port, "\n"));
      !written.ok()) {
    spdlog::error("{}", written.ToString());
  }
  if (absl::Status written = WriteFileAtomically(data_dir + "/qatd.port", absl::StrCat(grpc_port, "\n")); !written.ok()) {
    spdlog::error("{}", written.ToString());
  }
  spdlog::info("serving gRPC on port {} ({}{}), /metrics on port {}", grpc_port, options.listen,
               options.tls_cert.empty() ? "" : ", TLS", metrics_port);

  GpuMonitor gpu_monitor(&devices, &metrics, options.gpu_poll_seconds);
  if (!gpus.empty()) gpu_monitor.Start();

  const int signal = WaitForTerminationSignal();
  spdlog::info("received {}; shutting down", signal == SIGTERM ? "SIGTERM" : "SIGINT");
  if (grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService()) health->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  scheduler.Shutdown();
  gpu_monitor.Stop();
  server->Wait();
  ::unlink((data_dir + "/qatd.port").c_str());
  ::unlink((data_dir + "/metrics.port").c_str());
  spdlog::info("qatd stopped");
  ::close(*lock_fd);
  return 0;
}

}  // namespace qatd::server

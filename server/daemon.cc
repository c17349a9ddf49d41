#include "server/daemon.h"

#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/exposer.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
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
#include "server/device_metrics.h"
#include "server/device_pool.h"
#include "server/disk_reserve.h"
#include "server/retention.h"
#include "server/event_hub.h"
#include "server/job_journal.h"
#include "server/logging.h"
#include "server/metrics.h"
#include "server/qatd_service.h"
#include "server/scheduler.h"
#include "server/version.h"
#include "server/worker_channel.h"
#include "server/command_runner.h"
#include "server/slurm_launcher.h"
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

// Samples GPU memory for the device pool and qatd_device_* until stopped; on a host without
// GPUs (`has_gpus` false) only the host's memory and CPU for qatd_device_*{device="cpu"}.
class GpuMonitor {
 public:
  GpuMonitor(DevicePool* pool, DaemonMetrics* metrics, double period_s, bool has_gpus)
      : pool_(pool), metrics_(metrics), period_(std::chrono::duration<double>(period_s)), has_gpus_(has_gpus) {}
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
      std::vector<GpuInfo> gpus;
      if (has_gpus_) {
        gpus = DiscoverGpus();
        pool_->UpdateMemory(gpus);
      }
      // A failed nvidia-smi on a GPU host reports nothing (not the host as device "cpu").
      if (!has_gpus_ || !gpus.empty()) metrics_->Devices(sampler_.Sample(gpus));
      lock.lock();
      cv_.wait_for(lock, period_, [this] { return stop_; });
    }
  }

  DevicePool* pool_;
  DaemonMetrics* metrics_;
  DeviceSampler sampler_;
  std::chrono::duration<double> period_;
  bool has_gpus_;
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

// Owner-only access to what earlier versions created world-readable (0644 files, 0755 dir).
void TightenPermissions(const std::string& data_dir) {
  ::chmod(data_dir.c_str(), 0700);
  for (const char* name : {"qatd.db", "qatd.db-wal", "qatd.db-shm", "qatd.log", "qatd.lock", "qatd.port", "metrics.port"}) {
    ::chmod((data_dir + "/" + name).c_str(), 0600);
  }
  ::chmod((data_dir + "/jobs").c_str(), 0700);
}

// A missing or empty qatd.db next to job folders means the database was lost or moved: a new
// one would restart job ids at 1 and write into the old jobs' folders. Refuse unless --init,
// which moves the old folders aside first.
absl::Status GuardAgainstALostDatabase(const std::string& data_dir, bool init) {
  std::error_code ec;
  const fs::path db = fs::path(data_dir) / "qatd.db";
  const bool no_db = !fs::exists(db, ec) || fs::file_size(db, ec) == 0;
  if (!no_db) return absl::OkStatus();
  const fs::path jobs = fs::path(data_dir) / "jobs";
  std::string example;
  int count = 0;
  for (const auto& entry : fs::directory_iterator(jobs, ec)) {
    if (++count == 1) example = entry.path().filename().string();
  }
  if (count == 0) return absl::OkStatus();
  if (!init) {
    return absl::FailedPreconditionError(absl::StrCat(
        db.string(), " is ", fs::exists(db) ? "empty" : "missing", " but ", jobs.string(), " holds ", count,
        " job folder(s) (e.g. ", example, ") of an earlier database: refusing to start a new database over them. "
        "Restore qatd.db, or start once with --init to begin a new database (the old job folders are kept aside)"));
  }
  const fs::path aside = fs::path(data_dir) / absl::StrCat("jobs.before-init-", ::time(nullptr));
  fs::rename(jobs, aside, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("--init: cannot move ", jobs.string(), " aside: ", ec.message()));
  spdlog::warn("--init: a new database; the earlier job folders are in {}", aside.string());
  return absl::OkStatus();
}

// Why binding `listen` failed, when a plain bind() can tell (" (address already in use)").
std::string WhyNoBind(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return "";
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const int port = std::atoi(listen.c_str() + colon + 1);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (port <= 0 || ::inet_pton(AF_INET, host == "0.0.0.0" || host.empty() ? "0.0.0.0" : host.c_str(), &addr.sin_addr) != 1) {
    return "";
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::close(fd);
  if (rc == 0) return "";
  return absl::StrCat(" (", std::strerror(err), ")");
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

  // The data dir holds other people's jobs, models and tokens' effects: only this user reads
  // it. Files 0600, folders 0700, for the daemon and (inherited) its workers.
  ::umask(077);
  std::error_code ec;
  fs::create_directories(options.data_dir, ec);
  if (ec) return Fail(absl::FailedPreconditionError(absl::StrCat("cannot create ", options.data_dir, ": ", ec.message())));
  const std::string data_dir = fs::canonical(options.data_dir, ec).string();
  absl::StatusOr<int> lock_fd = LockDataDir(data_dir);
  if (!lock_fd.ok()) return Fail(lock_fd.status());
  TightenPermissions(data_dir);
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

  if (absl::Status guarded = GuardAgainstALostDatabase(data_dir, options.init); !guarded.ok()) return Fail(guarded);
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

  DaemonMetricsOptions metrics_options;
  metrics_options.finished_job_retention_ms = options.metrics_retention_ms;
  DaemonMetrics metrics(metrics_options);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(options.metrics_address);
  } catch (const std::exception& e) {
    return Fail(absl::FailedPreconditionError(absl::StrCat("cannot serve /metrics on ", options.metrics_address, ": ", e.what())));
  }
  for (const auto& collectable : metrics.Collectables()) exposer->RegisterCollectable(collectable);
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
  launcher_options.memory_limit_bytes = options.worker_memory_limit_bytes;
  SchedulerOptions scheduler_options;
  scheduler_options.jobs_dir = data_dir + "/jobs";
  scheduler_options.cancel_grace_ms = static_cast<int64_t>(options.cancel_grace_seconds * 1000);
  scheduler_options.max_attempts = options.max_attempts;
  scheduler_options.session_idle_timeout_seconds = options.session_idle_timeout_ms / 1000.0;
  DiskReserve reserve(data_dir + "/reserve.bin", options.disk_reserve_mib << 20);
  scheduler_options.reserve = &reserve;
  scheduler_options.data_dir = data_dir;
  ExecWorkerLauncher exec_launcher(launcher_options);
  ExecCommandRunner slurm_runner;
  SlurmOptions slurm_options;
  slurm_options.worker_binary = *worker_binary;
  slurm_options.partition = options.slurm_partition;
  slurm_options.account = options.slurm_account;
  slurm_options.extra_args = options.slurm_extra;
  slurm_options.cpus_per_task = options.slurm_cpus_per_task;
  slurm_options.daemon_ca_file = options.tls_cert;
  slurm_options.channel = &worker_channel;
  slurm_options.runner = &slurm_runner;
  SlurmWorkerLauncher slurm_launcher(slurm_options);
  const bool slurm = options.executor == "slurm";
  if (slurm) spdlog::info("executor: Slurm (partition {})", options.slurm_partition);
  WorkerLauncher& launcher = slurm ? static_cast<WorkerLauncher&>(slurm_launcher) : exec_launcher;
  Scheduler scheduler(scheduler_options, &journal, &devices, &launcher, &metrics);

  RetentionOptions retention_options;
  retention_options.jobs_dir = scheduler_options.jobs_dir;
  retention_options.allowed_output_roots = options.allow_output_roots;
  retention_options.compact_after_ms = options.compact_after_ms;
  retention_options.max_points_per_series = options.max_points_per_series;
  retention_options.keep_resume_state = options.keep_resume_state;
  Retention retention(retention_options, &journal, &clock);

  ServiceContext service_context;
  service_context.scheduler = &scheduler;
  service_context.retention = &retention;
  service_context.store = store->get();
  service_context.hub = &hub;
  service_context.devices = &devices;
  service_context.auth = &auth;
  service_context.data_dir = data_dir;
  service_context.start_time_ms = clock.NowMs();
  service_context.spec_checks.confine_paths = true;
  service_context.spec_checks.allowed_output_roots = options.allow_output_roots;
  service_context.spec_checks.allowed_input_roots = options.allow_input_roots;
  service_context.spec_checks.jobs_dir = scheduler_options.jobs_dir;
  service_context.spec_checks.max_nodes = slurm ? 4096 : 1;
  QatdService service(service_context);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(options.listen, *credentials, &grpc_port);
  // A second daemon on the same port must fail, not share it (gRPC enables SO_REUSEPORT).
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service);
  builder.RegisterService(&worker_channel);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcMetricsInterceptorFactory>(&metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen, WhyNoBind(options.listen))));
  }
  // Workers reach the daemon on the port it bound (the gRPC transport); jobs start only now.
  exec_launcher.set_daemon_address(WorkerAddress(options.listen, grpc_port));
  slurm_launcher.set_daemon_address(options.slurm_daemon_address.empty() ? WorkerAddress(options.listen, grpc_port)
                                                                          : options.slurm_daemon_address);
  if (absl::Status started = scheduler.Start(); !started.ok()) {
    server->Shutdown();
    return Fail(started);
  }
  retention.Start();
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

  GpuMonitor gpu_monitor(&devices, &metrics, options.gpu_poll_seconds, !gpus.empty());
  gpu_monitor.Start();

  const int signal = WaitForTerminationSignal();
  spdlog::info("received {}; shutting down", signal == SIGTERM ? "SIGTERM" : "SIGINT");
  if (grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService()) health->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  scheduler.Shutdown();
  retention.Stop();
  gpu_monitor.Stop();
  server->Wait();
  ::unlink((data_dir + "/qatd.port").c_str());
  ::unlink((data_dir + "/metrics.port").c_str());
  spdlog::info("qatd stopped");
  ::close(*lock_fd);
  return 0;
}

}  // namespace qatd::server

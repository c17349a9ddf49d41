#include "server/worker_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/worker_channel.h"
#include "worker/framing.h"
#include "worker/memory_limit.h"

extern char** environ;

namespace qatd::server {
namespace {

// Workers go first when the kernel runs out of memory (the daemon's score is usually 0).
constexpr int kWorkerOomScoreAdj = 500;

// max(kWorkerOomScoreAdj, the daemon's own score): a worker is never a less likely OOM victim
// than its daemon (and lowering a score would need CAP_SYS_RESOURCE anyway).
std::string WorkerOomScoreAdj() {
  int daemon = 0;
  std::ifstream in("/proc/self/oom_score_adj");
  if (!(in >> daemon)) daemon = 0;
  return absl::StrCat(std::max(kWorkerOomScoreAdj, daemon), "\n");
}

class ForkedWorker : public WorkerProcess {
 public:
  ForkedWorker(pid_t pid, int event_fd, uint64_t memory_limit_bytes, int control_fd = -1)
      : pid_(pid), event_fd_(event_fd), memory_limit_bytes_(memory_limit_bytes), control_fd_(control_fd) {}
  ~ForkedWorker() override {
    if (event_fd_ >= 0) ::close(event_fd_);
    if (control_fd_ >= 0) ::close(control_fd_);
  }

  absl::Status SendControl(const v1::WorkerControl& control) override {
    std::lock_guard<std::mutex> lock(control_mu_);
    if (control_fd_ < 0) {
      return absl::FailedPreconditionError(absl::StrCat("worker pid ", pid_, " has no control channel"));
    }
    // The worker reads the pipe on a thread of its own, so a write blocks only while a frame
    // is larger than what the pipe holds; EPIPE (SIGPIPE is ignored) once the worker is gone.
    return worker::WriteFrame(control_fd_, control);
  }
  int pid() const override { return pid_; }
  int event_fd() const override { return event_fd_; }

  void Signal(int signal) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (reaped_) return;
    if (signal == SIGKILL) sent_kill_ = true;
    if (::kill(-pid_, signal) != 0) ::kill(pid_, signal);
  }

  WorkerExit Wait() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (reaped_) return exit_;
    }
    return Reap(0).value_or(WorkerExit{});
  }

 protected:
  // waitpid with `flags` (0 or WNOHANG); the exit once reaped, std::nullopt while running.
  std::optional<WorkerExit> Reap(int flags) {
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid_, &status, flags);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return std::nullopt;
    std::lock_guard<std::mutex> lock(mu_);
    if (reaped_) return exit_;
    reaped_ = true;
    if (r < 0) {
      exit_.exit_code = 255;  // not our child any more; nothing better to report
    } else if (WIFSIGNALED(status)) {
      exit_.signaled = true;
      exit_.signal = WTERMSIG(status);
      // Not our SIGKILL: most likely the OOM killer (or an uncaught bad_alloc's abort).
      if ((exit_.signal == SIGKILL && !sent_kill_) || exit_.signal == SIGABRT) {
        exit_.memory_limit_bytes = memory_limit_bytes_;
      }
    } else {
      exit_.exit_code = WEXITSTATUS(status);
    }
    return exit_;
  }

  const pid_t pid_;
  const int event_fd_;
  const uint64_t memory_limit_bytes_;
  const int control_fd_;   // write end of a session job's control pipe, or -1
  std::mutex control_mu_;  // one control frame at a time
  std::mutex mu_;
  bool reaped_ = false;     // guarded by mu_
  bool sent_kill_ = false;  // guarded by mu_
  WorkerExit exit_;         // guarded by mu_, once reaped_
};

// A forked worker on the gRPC transport: events come from its WorkerChannel mailbox; a worker
// that exits without attaching (or whose stream end is lost) ends the events 2 s after its exit.
class ChannelWorker : public ForkedWorker {
 public:
  ChannelWorker(pid_t pid, uint64_t memory_limit_bytes, WorkerChannelService* channel,
                std::shared_ptr<WorkerMailbox> mailbox)
      : ForkedWorker(pid, -1, memory_limit_bytes), channel_(channel), mailbox_(std::move(mailbox)) {}
  ~ChannelWorker() override { channel_->Close(mailbox_); }

  absl::StatusOr<std::optional<v1::WorkerEvent>> NextEvent() override {
    using Clock = std::chrono::steady_clock;
    std::optional<Clock::time_point> exited_at;
    while (true) {
      v1::WorkerEvent event;
      absl::Status end;
      switch (mailbox_->Pop(std::chrono::milliseconds(200), &event, &end)) {
        case WorkerMailbox::PopResult::kEvent: return std::optional<v1::WorkerEvent>(std::move(event));
        case WorkerMailbox::PopResult::kEnded: return std::optional<v1::WorkerEvent>();
        case WorkerMailbox::PopResult::kTimeout: break;
      }
      if (!exited_at.has_value() && Reap(WNOHANG).has_value()) exited_at = Clock::now();
      if (exited_at.has_value() && Clock::now() - *exited_at > std::chrono::seconds(2)) {
        return std::optional<v1::WorkerEvent>();
      }
    }
  }

  void Signal(int signal) override {
    if (signal == SIGTERM && mailbox_->Cancel("cancel requested")) return;
    ForkedWorker::Signal(signal);
  }

  absl::Status SendControl(const v1::WorkerControl& control) override { return mailbox_->Send(control); }

 private:
  WorkerChannelService* channel_;
  std::shared_ptr<WorkerMailbox> mailbox_;
};

// Everything the child needs, prepared before fork(): after fork() in a multi-threaded
// process only async-signal-safe calls are allowed.
struct ChildPlan {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::vector<char*> argv;
  std::vector<char*> envp;
  std::optional<struct rlimit> data_limit;  // RLIMIT_DATA to set, if any
  std::string oom_score_adj;               // written to /proc/self/oom_score_adj
};

void WriteAll(int fd, const char* text) { (void)!::write(fd, text, ::strlen(text)); }

[[noreturn]] void RunChild(const char* exe, char* const argv[], char* const envp[], int event_w, int control_r,
                           int log_fd, int null_fd, pid_t parent, const struct rlimit* data_limit,
                           const char* oom_score_adj) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the daemon died before prctl took effect
  // Move the three fds above the target numbers first so no dup2 clobbers another.
  int w = ::fcntl(event_w, F_DUPFD, 100);
  int log = ::fcntl(log_fd, F_DUPFD, 100);
  int in = ::fcntl(null_fd, F_DUPFD, 100);
  int control = control_r >= 0 ? ::fcntl(control_r, F_DUPFD, 100) : -1;
  if (w < 0 || log < 0 || in < 0 || (control_r >= 0 && control < 0)) ::_exit(127);
  if (::dup2(in, 0) < 0 || ::dup2(log, 1) < 0 || ::dup2(log, 2) < 0 || ::dup2(w, 3) < 0) ::_exit(127);
  if (control >= 0 && ::dup2(control, 4) < 0) ::_exit(127);  // a session job's control pipe
  ::close_range(control >= 0 ? 5 : 4, ~0U, 0);
  // Best effort: raising one's own score needs no privilege, and a failure changes nothing else.
  int oom = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (oom >= 0) {
    WriteAll(oom, oom_score_adj);
    ::close(oom);
  }
  if (data_limit != nullptr && ::setrlimit(RLIMIT_DATA, data_limit) != 0) {
    WriteAll(2, "qatd: cannot set the worker memory limit (setrlimit RLIMIT_DATA failed)\n");
    ::_exit(127);
  }
  // SIGTERM/SIGINT stay blocked across exec: a cancel that arrives while the worker is still
  // loading LibTorch waits until qatd-worker has installed its handler and unblocks them
  // (worker/run_worker.cc), instead of killing it outright.
  sigset_t blocked;
  ::sigemptyset(&blocked);
  ::sigaddset(&blocked, SIGTERM);
  ::sigaddset(&blocked, SIGINT);
  ::sigprocmask(SIG_SETMASK, &blocked, nullptr);
  struct sigaction dfl;
  ::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &dfl, nullptr);
  ::execve(exe, argv, envp);
  ::_exit(127);
}

}  // namespace

absl::Status WorkerProcess::SendControl(const v1::WorkerControl& control) {
  (void)control;
  return absl::FailedPreconditionError("this worker has no control channel");
}

absl::StatusOr<std::optional<v1::WorkerEvent>> WorkerProcess::NextEvent() {
  absl::StatusOr<std::optional<std::string>> frame = worker::FrameReader(event_fd()).Next();
  if (!frame.ok()) return frame.status();
  if (!frame->has_value()) return std::optional<v1::WorkerEvent>();
  v1::WorkerEvent event;
  if (!event.ParseFromString(**frame)) return absl::DataLossError("unparsable worker event");
  return std::optional<v1::WorkerEvent>(std::move(event));
}

std::string WorkerExit::Describe() const {
  if (!detail.empty()) return detail;
  if (!signaled) return absl::StrCat("exited with code ", exit_code);
  const char* abbrev = ::sigabbrev_np(signal);
  std::string out = absl::StrCat("killed by signal ", abbrev != nullptr ? absl::StrCat("SIG", abbrev) : "unknown",
                                 " (", signal, ")");
  if (memory_limit_bytes > 0) {
    absl::StrAppend(&out, " (the worker memory limit is ", worker::FormatMemorySize(memory_limit_bytes), ")");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> ExecWorkerLauncher::Launch(const WorkerLaunch& launch) {
  ExecWorkerOptions o;  // a snapshot: the daemon address is set once the port is bound
  {
    std::lock_guard<std::mutex> lock(mu_);
    o = options_;
  }
  const bool grpc = o.transport == "grpc";
  if (grpc && (o.channel == nullptr || o.daemon_address.empty())) {
    return absl::FailedPreconditionError("the gRPC worker transport needs the daemon's address and WorkerChannel");
  }
  ChildPlan plan;
  plan.args = {o.executable, "job", absl::StrCat(launch.job_id), launch.kind.empty() ? "JOB" : launch.kind,
               "--task-file", launch.task_file};
  if (grpc) {
    plan.args.insert(plan.args.end(), {"--daemon", o.daemon_address});
    if (!o.daemon_ca_file.empty()) plan.args.insert(plan.args.end(), {"--daemon-ca", o.daemon_ca_file});
  } else {
    plan.args.insert(plan.args.end(), {"--event-fd", "3"});
    if (launch.session) plan.args.insert(plan.args.end(), {"--control-fd", "4"});
  }
  const std::string limit_env = absl::StrCat(worker::kMemoryLimitEnv, "=");
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    // The worker gets its devices, secret and memory limit from us and never needs the daemon's
    // token.
    if (absl::StartsWith(*e, "CUDA_VISIBLE_DEVICES=") || absl::StartsWith(*e, "QATD_TOKEN=") ||
        absl::StartsWith(*e, "QATD_JOB_SECRET=") || absl::StartsWith(*e, limit_env)) {
      continue;
    }
    plan.env.emplace_back(*e);
  }
  uint64_t memory_limit = 0;
  if (o.memory_limit_bytes > 0) {
    struct rlimit current {};
    if (::getrlimit(RLIMIT_DATA, &current) != 0) current.rlim_max = RLIM_INFINITY;
    const rlim_t bytes = std::min<rlim_t>(o.memory_limit_bytes, current.rlim_max);
    plan.data_limit = rlimit{bytes, bytes};
    memory_limit = bytes;
    plan.env.push_back(absl::StrCat(limit_env, memory_limit));
  }
  plan.oom_score_adj = WorkerOomScoreAdj();
  plan.env.push_back(absl::StrCat("CUDA_VISIBLE_DEVICES=", launch.cuda_visible_devices));
  plan.env.push_back(absl::StrCat("QATD_JOB_ID=", launch.job_id));
  std::shared_ptr<WorkerMailbox> mailbox;
  if (grpc) {
    absl::StatusOr<std::string> secret = NewJobSecret();
    if (!secret.ok()) return secret.status();
    plan.env.push_back(absl::StrCat("QATD_JOB_SECRET=", *secret));
    mailbox = o.channel->Open(launch.job_id, *secret);
  }
  for (std::string& a : plan.args) plan.argv.push_back(a.data());
  plan.argv.push_back(nullptr);
  for (std::string& e : plan.env) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
  int control[2] = {-1, -1};  // daemon -> worker, a session job on the pipe transport
  if (launch.session && !grpc && ::pipe2(control, O_CLOEXEC) != 0) {
    int saved = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::InternalError(absl::StrCat("pipe2: ", strerror(saved)));
  }
  auto close_control = [&control] {
    for (int& fd : control) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  };
  int log_fd = ::open(launch.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || null_fd < 0) {
    int saved = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    if (log_fd >= 0) ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    close_control();
    return absl::InternalError(absl::StrCat("open ", launch.log_file, ": ", strerror(saved)));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    RunChild(o.executable.c_str(), plan.argv.data(), plan.envp.data(), grpc ? null_fd : fds[1], control[0], log_fd,
             null_fd, parent, plan.data_limit.has_value() ? &*plan.data_limit : nullptr, plan.oom_score_adj.c_str());
  }
  int saved = errno;
  ::close(fds[1]);
  ::close(log_fd);
  ::close(null_fd);
  if (control[0] >= 0) ::close(control[0]);
  control[0] = -1;
  if (pid < 0) {
    ::close(fds[0]);
    close_control();
    if (mailbox != nullptr) o.channel->Close(mailbox);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", strerror(saved)));
  }
  // Also set the group from the parent side, so a signal sent right after Launch() returns
  // reaches the group even if the child has not run setpgid yet.
  ::setpgid(pid, pid);
  if (grpc) {
    ::close(fds[0]);
    return std::unique_ptr<WorkerProcess>(new ChannelWorker(pid, memory_limit, o.channel, std::move(mailbox)));
  }
  return std::unique_ptr<WorkerProcess>(new ForkedWorker(pid, fds[0], memory_limit, control[1]));
}

absl::StatusOr<std::string> FindWorkerBinary(const std::string& flag, const std::string& self) {
  namespace fs = std::filesystem;
  auto executable = [](const fs::path& p) { return ::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p); };
  if (!flag.empty()) {
    if (executable(flag)) return flag;
    return absl::NotFoundError(absl::StrCat("--worker-binary ", flag, " is not an executable file"));
  }
  std::vector<std::string> tried;
  std::error_code ec;
  const fs::path self_path = fs::canonical(self, ec);
  if (!ec) {
    for (const fs::path& candidate :
         {self_path.parent_path() / "qatd-worker", self_path.parent_path().parent_path() / "worker" / "qatd-worker"}) {
      if (executable(candidate)) return candidate.string();
      tried.push_back(candidate.string());
    }
  }
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "", ':', absl::SkipEmpty())) {
    const fs::path candidate = fs::path(std::string(dir)) / "qatd-worker";
    if (executable(candidate)) return candidate.string();
  }
  tried.push_back("$PATH");
  return absl::NotFoundError(absl::StrCat("cannot find the qatd-worker executable (looked at ",
                                          absl::StrJoin(tried, ", "), "); pass --worker-binary"));
}

}  // namespace qatd::server

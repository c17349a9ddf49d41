#include "server/worker_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace qatd::server {
namespace {

class ForkedWorker : public WorkerProcess {
 public:
  ForkedWorker(pid_t pid, int event_fd) : pid_(pid), event_fd_(event_fd) {}
  ~ForkedWorker() override {
    if (event_fd_ >= 0) ::close(event_fd_);
  }
  int pid() const override { return pid_; }
  int event_fd() const override { return event_fd_; }

  void Signal(int signal) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (reaped_) return;
    if (::kill(-pid_, signal) != 0) ::kill(pid_, signal);
  }

  WorkerExit Wait() override {
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    std::lock_guard<std::mutex> lock(mu_);
    reaped_ = true;
    WorkerExit exit;
    if (r < 0) {
      exit.exit_code = 255;  // not our child any more; nothing better to report
    } else if (WIFSIGNALED(status)) {
      exit.signaled = true;
      exit.signal = WTERMSIG(status);
    } else {
      exit.exit_code = WEXITSTATUS(status);
    }
    return exit;
  }

 private:
  const pid_t pid_;
  const int event_fd_;
  std::mutex mu_;
  bool reaped_ = false;  // guarded by mu_
};

// Everything the child needs, prepared before fork(): after fork() in a multi-threaded
// process only async-signal-safe calls are allowed.
struct ChildPlan {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::vector<char*> argv;
  std::vector<char*> envp;
};

[[noreturn]] void RunChild(const char* exe, char* const argv[], char* const envp[], int event_w, int log_fd,
                           int null_fd, pid_t parent) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the daemon died before prctl took effect
  // Move the three fds above the target numbers first so no dup2 clobbers another.
  int w = ::fcntl(event_w, F_DUPFD, 100);
  int log = ::fcntl(log_fd, F_DUPFD, 100);
  int in = ::fcntl(null_fd, F_DUPFD, 100);
  if (w < 0 || log < 0 || in < 0) ::_exit(127);
  if (::dup2(in, 0) < 0 || ::dup2(log, 1) < 0 || ::dup2(log, 2) < 0 || ::dup2(w, 3) < 0) ::_exit(127);
  ::close_range(4, ~0U, 0);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl;
  ::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &dfl, nullptr);
  ::execve(exe, argv, envp);
  ::_exit(127);
}

}  // namespace

std::string WorkerExit::Describe() const {
  if (!signaled) return absl::StrCat("exited with code ", exit_code);
  const char* abbrev = ::sigabbrev_np(signal);
  return absl::StrCat("killed by signal ", abbrev != nullptr ? absl::StrCat("SIG", abbrev) : "unknown", " (",
                      signal, ")");
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> ExecWorkerLauncher::Launch(const WorkerLaunch& launch) {
  ChildPlan plan;
  plan.args = {executable_, "worker", "--job-file", launch.task_file, "--event-fd", "3"};
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    // The worker gets its devices from us and never needs the daemon's token.
    if (absl::StartsWith(*e, "CUDA_VISIBLE_DEVICES=") || absl::StartsWith(*e, "QATD_TOKEN=")) continue;
    plan.env.emplace_back(*e);
  }
  plan.env.push_back(absl::StrCat("CUDA_VISIBLE_DEVICES=", launch.cuda_visible_devices));
  plan.env.push_back(absl::StrCat("QATD_JOB_ID=", launch.job_id));
  for (std::string& a : plan.args) plan.argv.push_back(a.data());
  plan.argv.push_back(nullptr);
  for (std::string& e : plan.env) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
  int log_fd = ::open(launch.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || null_fd < 0) {
    int saved = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    if (log_fd >= 0) ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    return absl::InternalError(absl::StrCat("open ", launch.log_file, ": ", strerror(saved)));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) RunChild(executable_.c_str(), plan.argv.data(), plan.envp.data(), fds[1], log_fd, null_fd, parent);
  int saved = errno;
  ::close(fds[1]);
  ::close(log_fd);
  ::close(null_fd);
  if (pid < 0) {
    ::close(fds[0]);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", strerror(saved)));
  }
  // Also set the group from the parent side, so a signal sent right after Launch() returns
  // reaches the group even if the child has not run setpgid yet.
  ::setpgid(pid, pid);
  return std::unique_ptr<WorkerProcess>(new ForkedWorker(pid, fds[0]));
}

}  // namespace qatd::server

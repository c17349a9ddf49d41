#include "server/worker_main.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "server/pipe_reporter.h"
#include "storage/job_codec.h"

namespace qatd::server {
namespace {

std::atomic<jobs::CancelToken*> g_cancel{nullptr};

void OnTerminate(int) {
  jobs::CancelToken* token = g_cancel.load();
  if (token != nullptr) token->Cancel();  // a lock-free atomic store: async-signal-safe
}

void InstallSignalHandlers() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnTerminate;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

}  // namespace

int RunWorker(const WorkerArgs& args, const JobRegistry& registry) {
  jobs::CancelToken cancel;
  g_cancel.store(&cancel);
  InstallSignalHandlers();
  PipeReporter reporter(args.event_fd, &cancel);

  v1::WorkerTask task;
  {
    std::ifstream in(args.job_file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    if (!in || !task.ParseFromString(bytes.str())) {
      absl::Status bad = absl::InvalidArgumentError(absl::StrCat("cannot read the job file ", args.job_file));
      std::fprintf(stderr, "qatd worker: %s\n", bad.ToString().c_str());
      (void)reporter.Finish(bad);
      return 2;
    }
  }
  const v1::JobKind kind = storage::JobKindOf(task.spec());
  std::fprintf(stderr, "qatd worker: job %lld (%s), attempt %d, pid %d\n", static_cast<long long>(task.job_id()),
               storage::JobKindName(kind).c_str(), task.attempt(), static_cast<int>(getpid()));

  absl::Status status;
  const JobFunction* run = registry.Find(kind);
  if (run == nullptr) {
    status = absl::FailedPreconditionError(
        absl::StrCat("job kind ", storage::JobKindName(kind), " is not available in this build"));
  } else {
    try {
      status = (*run)(task, reporter, cancel);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("job threw: ", e.what()));
    } catch (...) {
      status = absl::InternalError("job threw a non-standard exception");
    }
    // A job that stops early because of a cancel may report how it stopped in other terms.
    if (!status.ok() && cancel.cancelled() && !absl::IsCancelled(status)) {
      status = absl::CancelledError(absl::StrCat("cancelled (", std::string(status.message()), ")"));
    }
  }
  std::fprintf(stderr, "qatd worker: job %lld ends: %s\n", static_cast<long long>(task.job_id()),
               status.ToString().c_str());
  std::fflush(stderr);
  return reporter.Finish(status).ok() ? 0 : 3;
}

}  // namespace qatd::server

#include "worker/run_worker.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/jobs/job_kind.h"
#include "core/jobs/job_spec.h"
#include "worker/event_reporter.h"
#include "worker/grpc_reporter.h"
#include "worker/memory_limit.h"

namespace qatd::worker {
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
  // The launcher starts workers with these blocked (server/worker_launcher.cc) so that a cancel
  // during start-up waits for the handler: one that arrived meanwhile is delivered now.
  sigset_t termination;
  sigemptyset(&termination);
  sigaddset(&termination, SIGTERM);
  sigaddset(&termination, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &termination, nullptr);
}

}  // namespace

int RunWorker(const WorkerArgs& args, const JobRegistry& registry) {
  jobs::CancelToken cancel;
  g_cancel.store(&cancel);
  InstallSignalHandlers();
  std::unique_ptr<EventReporter> transport;
  if (args.daemon_address.empty()) {
    transport = std::make_unique<PipeReporter>(args.event_fd, &cancel);
  } else {
    const char* secret = std::getenv("QATD_JOB_SECRET");
    GrpcReporterOptions options;
    options.daemon_address = args.daemon_address;
    options.ca_file = args.daemon_ca_file;
    options.job_id = args.job_id;
    options.secret = secret != nullptr ? secret : "";
    options.daemon_timeout_seconds = args.daemon_timeout_seconds;
    absl::StatusOr<std::unique_ptr<GrpcReporter>> connected = GrpcReporter::Connect(options, &cancel);
    if (!connected.ok()) {
      std::fprintf(stderr, "qatd-worker: %s\n", connected.status().ToString().c_str());
      return 3;
    }
    transport = *std::move(connected);
  }
  EventReporter& reporter = *transport;
  if (args.control_fd >= 0) {
    // Detached: it blocks in read() until the daemon closes the pipe, which may be after we
    // return; it holds the inbox it fills.
    std::thread([fd = args.control_fd, inbox = transport->session_inbox()] { ReadControlPipe(fd, inbox.get()); })
        .detach();
  }

  v1::WorkerTask task;
  {
    std::ifstream in(args.task_file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    if (!in || !task.ParseFromString(bytes.str())) {
      absl::Status bad = absl::InvalidArgumentError(absl::StrCat("cannot read the task file ", args.task_file));
      std::fprintf(stderr, "qatd-worker: %s\n", bad.ToString().c_str());
      (void)reporter.Finish(bad);
      return 2;
    }
  }
  if (args.job_id != 0 && args.job_id != task.job_id()) {
    absl::Status bad = absl::InvalidArgumentError(
        absl::StrCat("the task file is job ", task.job_id(), "'s, not job ", args.job_id, "'s"));
    std::fprintf(stderr, "qatd-worker: %s\n", bad.ToString().c_str());
    (void)reporter.Finish(bad);
    return 2;
  }
  const v1::JobKind kind = jobs::JobKindOf(task.spec());
  std::fprintf(stderr, "qatd-worker: job %lld (%s), attempt %d, pid %d\n", static_cast<long long>(task.job_id()),
               jobs::JobKindName(kind).c_str(), task.attempt(), static_cast<int>(getpid()));

  absl::Status status = jobs::CheckOutputDirAtStart(task);
  const bool session = IsSession(task.spec());
  const JobFunction* run = registry.Find(kind);
  const SessionFunction* run_session = registry.FindSession(kind);
  if (!status.ok()) {
    // refused before anything is written
  } else if (session ? run_session == nullptr : run == nullptr) {
    status = absl::FailedPreconditionError(
        absl::StrCat("job kind ", jobs::JobKindName(kind), " is not available in this build"));
  } else {
    try {
      status = session ? (*run_session)(task, reporter, *transport->session_inbox(), cancel)
                       : (*run)(task, reporter, cancel);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("job threw: ", e.what()));
    } catch (...) {
      status = absl::InternalError("job threw a non-standard exception");
    }
    // A job that stops early because of a cancel may report how it stopped in other terms.
    if (!status.ok() && cancel.cancelled() && !absl::IsCancelled(status)) {
      status = absl::CancelledError(absl::StrCat("cancelled (", std::string(status.message()), ")"));
    }
    // Core reports a failed host allocation however it surfaced (bad_alloc, LibTorch's
    // allocator, ENOMEM); this is the one place it becomes RESOURCE_EXHAUSTED naming the limit.
    status = ExplainAllocationFailure(status, MemoryLimitFromEnvironment());
  }
  std::fprintf(stderr, "qatd-worker: job %lld ends: %s\n", static_cast<long long>(task.job_id()),
               status.ToString().c_str());
  std::fflush(stderr);
  return reporter.Finish(status).ok() ? 0 : 3;
}

}  // namespace qatd::worker

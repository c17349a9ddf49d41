#include "server/slurm_launcher.h"

#include <signal.h>

#include <algorithm>
#include <climits>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/common/file_util.h"
#include "server/worker_channel.h"
#include "spdlog/spdlog.h"

namespace qatd::server {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

v1::WorkerEvent LogEvent(v1::LogLevel level, const std::string& message) {
  v1::WorkerEvent event;
  event.mutable_log()->set_level(level);
  event.mutable_log()->set_message(message);
  return event;
}

class SlurmWorker : public WorkerProcess {
 public:
  SlurmWorker(SlurmOptions options, int64_t slurm_job_id, std::string exit_dir, std::shared_ptr<WorkerMailbox> mailbox,
              std::string submitted)
      : options_(std::move(options)),
        slurm_job_id_(slurm_job_id),
        exit_dir_(std::move(exit_dir)),
        mailbox_(std::move(mailbox)) {
    pending_.push_back(LogEvent(v1::LOG_LEVEL_INFO, submitted));
  }
  ~SlurmWorker() override { options_.channel->Close(mailbox_); }

  int pid() const override { return static_cast<int>(std::min<int64_t>(slurm_job_id_, INT_MAX)); }
  int event_fd() const override { return -1; }

  absl::StatusOr<std::optional<v1::WorkerEvent>> NextEvent() override {
    std::optional<Clock::time_point> ended_at;
    Clock::time_point next_poll = Clock::now();
    while (true) {
      if (!pending_.empty()) {
        v1::WorkerEvent event = std::move(pending_.front());
        pending_.pop_front();
        return std::optional<v1::WorkerEvent>(std::move(event));
      }
      v1::WorkerEvent event;
      absl::Status end;
      switch (mailbox_->Pop(std::chrono::milliseconds(200), &event, &end)) {
        case WorkerMailbox::PopResult::kEvent:
          if (event.has_final()) AddTaskExits(event);
          return std::optional<v1::WorkerEvent>(std::move(event));
        case WorkerMailbox::PopResult::kEnded: return std::optional<v1::WorkerEvent>();
        case WorkerMailbox::PopResult::kTimeout: break;
      }
      if (Clock::now() >= next_poll) {
        next_poll = Clock::now() + options_.poll_interval;
        const SlurmJobState state = Poll();
        if (!state.state.empty() && state.state != last_state_) {
          last_state_ = state.state;
          if (state.state == "RUNNING") {
            pending_.push_back(LogEvent(v1::LOG_LEVEL_INFO, absl::StrCat("Slurm job ", slurm_job_id_, " running on ",
                                                                         state.nodes)));
          } else if (state.state == "PENDING") {
            pending_.push_back(LogEvent(v1::LOG_LEVEL_INFO, absl::StrCat("Slurm job ", slurm_job_id_, " pending (",
                                                                         state.reason, ")")));
          }
        }
        if (!state.active() && !ended_at.has_value()) ended_at = Clock::now();
      }
      // Events rank 0 sent just before the job ended are still arriving: allow them 2 s.
      if (ended_at.has_value() && pending_.empty() && Clock::now() - *ended_at > std::chrono::seconds(2)) {
        return std::optional<v1::WorkerEvent>();
      }
    }
  }

  void Signal(int signal) override {
    if (signal == SIGTERM && mailbox_->Cancel("cancel requested")) return;
    if (signal == SIGKILL) Scancel({"--signal", "KILL", "--full"});
    Scancel({});
  }

  absl::Status SendControl(const v1::WorkerControl& control) override { return mailbox_->Send(control); }

  WorkerExit Wait() override {
    const Clock::time_point start = Clock::now();
    bool cancelled = false;
    SlurmJobState state = Poll();
    while (state.active()) {
      if (!cancelled && Clock::now() - start > std::chrono::seconds(10)) {
        spdlog::warn("Slurm job {} still {} 10 s after its worker's stream ended; scancel", slurm_job_id_,
                     state.state);
        Scancel({});
        cancelled = true;
      }
      std::this_thread::sleep_for(options_.poll_interval);
      state = Poll();
    }
    WorkerExit exit;
    const std::string tasks = DescribeTaskExits(exit_dir_);
    int code = 0;
    const std::vector<std::string> parts = absl::StrSplit(state.exit_code, ':');
    if (!parts.empty()) (void)absl::SimpleAtoi(parts[0], &code);
    exit.exit_code = code;
    if (!tasks.empty()) {
      exit.detail = absl::StrCat("(Slurm job ", slurm_job_id_, ") ", tasks);
      if (exit.exit_code == 0) exit.exit_code = 1;
    } else if (state.state != "COMPLETED" || code != 0) {
      exit.detail = absl::StrCat("(Slurm job ", slurm_job_id_, ") ended ", state.state.empty() ? "UNKNOWN" : state.state,
                                 state.nodes.empty() ? "" : absl::StrCat(" on ", state.nodes), " with exit code ",
                                 state.exit_code.empty() ? "?" : state.exit_code);
      if (exit.exit_code == 0) exit.exit_code = 1;
    }
    return exit;
  }

 private:
  // A failure rank 0 reported names the task that died first, once Slurm has ended the job.
  void AddTaskExits(v1::WorkerEvent& event) {
    const v1::JobError& status = event.final().status();
    if (status.code() == 0 || status.code() == static_cast<int>(absl::StatusCode::kCancelled)) return;
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(30);
    while (Poll().active() && Clock::now() < deadline) std::this_thread::sleep_for(options_.poll_interval);
    const std::string tasks = DescribeTaskExits(exit_dir_);
    if (tasks.empty()) return;
    event.mutable_final()->mutable_status()->set_message(
        absl::StrCat(tasks, " (Slurm job ", slurm_job_id_, "): ", status.message()));
  }

  SlurmJobState Poll() {
    const std::string id = absl::StrCat(slurm_job_id_);
    absl::StatusOr<CommandResult> shown =
        options_.runner->Run({"scontrol", "show", "job", "-o", id}, {}, options_.command_timeout);
    if (shown.ok() && shown->exit_code == 0) {
      SlurmJobState state = ParseScontrolJob(shown->out);
      if (!state.state.empty()) return state;
    }
    // slurmctld forgot the job (MinJobAge): accounting, where the cluster has it.
    absl::StatusOr<CommandResult> acct = options_.runner->Run(
        {"sacct", "-n", "-P", "-X", "-j", id, "-o", "State,ExitCode,NodeList"}, {}, options_.command_timeout);
    if (acct.ok() && acct->exit_code == 0) {
      const std::vector<std::string> fields = absl::StrSplit(absl::StripAsciiWhitespace(acct->out), '|');
      if (fields.size() >= 3 && !fields[0].empty()) {
        SlurmJobState state;
        state.state = std::string(absl::StripAsciiWhitespace(std::vector<std::string>(absl::StrSplit(fields[0], ' '))[0]));
        state.exit_code = fields[1];
        state.nodes = fields[2];
        return state;
      }
    }
    const bool forgotten = shown.ok() && absl::StrContains(shown->err, "Invalid job id");
    if (forgotten) return SlurmJobState{"GONE", "", "", ""};
    // slurmctld unreachable: keep following the job rather than declare it ended.
    spdlog::warn("Slurm job {}: cannot read its state ({})", slurm_job_id_,
                 shown.ok() ? std::string(absl::StripAsciiWhitespace(shown->err)) : shown.status().ToString());
    return SlurmJobState{"UNKNOWN", "", "", ""};
  }

  void Scancel(const std::vector<std::string>& flags) {
    std::vector<std::string> argv = {"scancel"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back(absl::StrCat(slurm_job_id_));
    absl::StatusOr<CommandResult> r = options_.runner->Run(argv, {}, options_.command_timeout);
    if (!r.ok() || r->exit_code != 0) {
      spdlog::warn("{} failed: {}", absl::StrJoin(argv, " "),
                   r.ok() ? std::string(absl::StripAsciiWhitespace(r->err)) : r.status().ToString());
    }
  }

  const SlurmOptions options_;
  const int64_t slurm_job_id_;
  const std::string exit_dir_;
  std::shared_ptr<WorkerMailbox> mailbox_;
  std::deque<v1::WorkerEvent> pending_;  // the monitor thread's only
  std::string last_state_;
};

}  // namespace

bool SlurmJobState::active() const {
  static const char* const kActive[] = {"PENDING",     "CONFIGURING", "RUNNING",   "COMPLETING", "SUSPENDED",
                                        "REQUEUED",    "RESIZING",    "SIGNALING", "STAGE_OUT",  "REQUEUE_HOLD",
                                        "REQUEUE_FED", "RESV_DEL_HOLD", "UNKNOWN"};
  for (const char* a : kActive) {
    if (state == a) return true;
  }
  return false;
}

SlurmJobState ParseScontrolJob(const std::string& line) {
  SlurmJobState state;
  for (absl::string_view field : absl::StrSplit(line, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    const size_t eq = field.find('=');
    if (eq == absl::string_view::npos) continue;
    const absl::string_view key = field.substr(0, eq);
    const std::string value(field.substr(eq + 1));
    if (key == "JobState") state.state = value;
    if (key == "NodeList") state.nodes = value;
    if (key == "ExitCode") state.exit_code = value;
    if (key == "Reason") state.reason = value;
  }
  if (state.nodes == "(null)") state.nodes.clear();
  return state;
}

std::string DescribeTaskExits(const std::string& exit_dir) {
  struct TaskExit {
    int rank = 0;
    std::string node;
    int code = 0;
    double time = 0;  // when it ended (Unix seconds), 0 if not recorded
  };
  std::vector<TaskExit> bad;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(exit_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("task-", 0) != 0 || entry.path().extension() != ".exit") continue;
    std::ifstream in(entry.path());
    TaskExit t;
    if (!(in >> t.rank >> t.node >> t.code) || t.code == 0) continue;
    if (!(in >> t.time)) t.time = 0;
    bad.push_back(t);
  }
  if (bad.empty()) return "";
  // A scancel, or srun ending a step, ends the other tasks with SIGTERM (143): the culprit is
  // a task that ended otherwise, the earliest; then the lowest rank.
  constexpr int kTerminated = 128 + SIGTERM;
  std::sort(bad.begin(), bad.end(), [](const TaskExit& a, const TaskExit& b) {
    const bool a_term = a.code == kTerminated, b_term = b.code == kTerminated;
    if (a_term != b_term) return !a_term;
    if (a.time != b.time) return a.time < b.time;
    return a.rank < b.rank;
  });
  return absl::StrCat("task ", bad[0].rank, " on node ", bad[0].node, " exited ", bad[0].code);
}

SlurmShape SlurmShapeOf(const v1::WorkerTask& task) {
  SlurmShape shape;
  // One task per device on each node: submit-time validation lets only the data-parallel kinds
  // ask for more than one device, and only QAT for more than one node.
  const v1::Resources& r = task.spec().resources();
  shape.nodes = r.has_nodes() ? std::max(1, r.nodes()) : 1;
  shape.tasks_per_node = r.has_device_count() ? std::max(1, r.device_count()) : 1;
  return shape;
}

std::vector<std::string> SbatchCommand(const SlurmOptions& options, const WorkerLaunch& launch, const SlurmShape& shape,
                                       const std::string& script) {
  std::vector<std::string> argv = {"sbatch",
                                   "--parsable",
                                   absl::StrCat("--job-name=qatd-", launch.job_id),
                                   absl::StrCat("--partition=", options.partition)};
  if (!options.account.empty()) argv.push_back(absl::StrCat("--account=", options.account));
  argv.push_back(absl::StrCat("--nodes=", shape.nodes));
  argv.push_back(absl::StrCat("--ntasks-per-node=", shape.tasks_per_node));
  argv.push_back(absl::StrCat("--cpus-per-task=", options.cpus_per_task));
  argv.push_back("--no-requeue");
  argv.push_back("--open-mode=append");
  argv.push_back(absl::StrCat("--output=", launch.log_file));
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  argv.push_back(script);
  return argv;
}

std::string BatchScript(const SlurmOptions& options, const WorkerLaunch& launch, const std::string& slurm_dir) {
  std::vector<std::string> worker = {options.worker_binary, "slurm-task",  "--job-id",    absl::StrCat(launch.job_id),
                                     "--kind",              launch.kind.empty() ? "JOB" : launch.kind,
                                     "--task-file",         launch.task_file, "--daemon", options.daemon_address};
  if (!options.daemon_ca_file.empty()) worker.insert(worker.end(), {"--daemon-ca", options.daemon_ca_file});
  std::vector<std::string> quoted;
  for (const std::string& w : worker) quoted.push_back(ShellQuote(w));
  // Not --kill-on-bad-exit: srun's SIGTERM to the other tasks would reach rank 0 as a cancel
  // before it reports why its collective failed; the ranks fail together through Gloo.
  // Each task runs in a small shell that records how it ended (a task killed by signal N
  // reports 128 + N) and the node; the trap lets it outlive a SIGTERM long enough to write.
  return absl::StrCat(
      "#!/bin/bash\n"
      "# qatd job ", launch.job_id, " (", launch.kind, "): one attempt on Slurm, written by qatd\n"
      "# (server/slurm_launcher.cc). The daemon's secret for this run is in $QATD_JOB_SECRET.\n"
      "set -u\n"
      "export QATD_SLURM_EXIT_DIR=", ShellQuote(slurm_dir), "/\"$SLURM_JOB_ID\"\n"
      "mkdir -p \"$QATD_SLURM_EXIT_DIR\"\n"
      "echo \"qatd: Slurm job $SLURM_JOB_ID: $SLURM_NTASKS task(s) on $SLURM_JOB_NODELIST\"\n"
      "srun --kill-on-bad-exit=0 bash -c 'trap true TERM; \"$@\" & wait $!; rc=$?; "
      "[ \"$rc\" -gt 128 ] && kill -0 $! 2>/dev/null && { wait $!; rc=$?; }; "
      "echo \"$SLURM_PROCID $(hostname -s) $rc $(date +%s.%N)\" > \"$QATD_SLURM_EXIT_DIR/task-$SLURM_PROCID.exit\"; exit $rc' qatd-task ",
      absl::StrJoin(quoted, " "), " --rendezvous-dir \"$QATD_SLURM_EXIT_DIR\"\n");
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> SlurmWorkerLauncher::Launch(const WorkerLaunch& launch) {
  SlurmOptions o;
  {
    std::lock_guard<std::mutex> lock(mu_);
    o = options_;
  }
  if (o.channel == nullptr || o.runner == nullptr || o.daemon_address.empty()) {
    return absl::FailedPreconditionError("the Slurm executor needs the daemon's address, WorkerChannel and runner");
  }
  v1::WorkerTask task;
  {
    std::ifstream in(launch.task_file, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    if (!in || !task.ParseFromString(bytes.str())) {
      return absl::InternalError(absl::StrCat("cannot read the task file ", launch.task_file));
    }
  }
  const std::string slurm_dir = absl::StrCat(task.job_dir(), "/slurm");
  std::error_code ec;
  fs::create_directories(slurm_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", slurm_dir, ": ", ec.message()));
  const std::string script = absl::StrCat(slurm_dir, "/job.sh");
  if (absl::Status s = WriteFileAtomically(script, BatchScript(o, launch, slurm_dir)); !s.ok()) return s;
  fs::permissions(script, fs::perms::owner_all, fs::perm_options::replace, ec);

  absl::StatusOr<std::string> secret = NewJobSecret();
  if (!secret.ok()) return secret.status();
  const SlurmShape shape = SlurmShapeOf(task);
  const std::vector<std::string> argv = SbatchCommand(o, launch, shape, script);
  std::shared_ptr<WorkerMailbox> mailbox = o.channel->Open(launch.job_id, *secret);
  absl::StatusOr<CommandResult> submitted =
      o.runner->Run(argv, {absl::StrCat("QATD_JOB_SECRET=", *secret), absl::StrCat("QATD_JOB_ID=", launch.job_id),
                           "QATD_TOKEN="},
                    o.command_timeout);
  int64_t slurm_job_id = 0;
  if (submitted.ok() && submitted->exit_code == 0) {
    // --parsable: "<id>" or "<id>;<cluster>".
    const std::string first = std::vector<std::string>(absl::StrSplit(submitted->out, absl::ByAnyChar(";\n")))[0];
    (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(first), &slurm_job_id);
  }
  if (slurm_job_id <= 0) {
    o.channel->Close(mailbox);
    const std::string why = !submitted.ok() ? submitted.status().ToString()
                                            : std::string(absl::StripAsciiWhitespace(submitted->err + submitted->out));
    return absl::UnavailableError(absl::StrCat("sbatch failed for job ", launch.job_id, ": ", why));
  }
  const std::string message =
      absl::StrCat("submitted as Slurm job ", slurm_job_id, " (partition ", o.partition, ", ", shape.nodes, " node(s) x ",
                   shape.tasks_per_node, " task(s), ", o.cpus_per_task, " CPU(s) per task)");
  spdlog::info("job {}: {}", launch.job_id, message);
  return std::unique_ptr<WorkerProcess>(new SlurmWorker(o, slurm_job_id, absl::StrCat(slurm_dir, "/", slurm_job_id),
                                                        std::move(mailbox), message));
}

}  // namespace qatd::server

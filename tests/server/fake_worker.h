#pragma once
// A scriptable stand-in for worker processes: the test writes events into the pipe the
// scheduler reads and decides how the "process" exits.

#include <unistd.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "qatd/v1/worker.pb.h"
#include "worker/framing.h"
#include "server/status_mapping.h"
#include "server/worker_launcher.h"
#include "core/jobs/job_kind.h"

namespace qatd::server::testing {

class FakeWorker : public WorkerProcess {
 public:
  FakeWorker(int pid, int read_fd, int write_fd) : pid_(pid), read_fd_(read_fd), write_fd_(write_fd) {}
  ~FakeWorker() override {
    CloseWrite();
    ::close(read_fd_);
  }
  int pid() const override { return pid_; }
  int event_fd() const override { return read_fd_; }
  void Signal(int signal) override {
    std::lock_guard<std::mutex> lock(mu_);
    signals_.push_back(signal);
    cv_.notify_all();
    if (signal == 9 && !exited_) {
      exit_.signaled = true;
      exit_.signal = 9;
      exited_ = true;
      CloseWriteLocked();
    }
  }
  WorkerExit Wait() override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return exited_; });
    return exit_;
  }
  absl::Status SendControl(const v1::WorkerControl& control) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (exited_) return absl::UnavailableError("the fake worker exited");
    controls_.push_back(control);
    return absl::OkStatus();
  }
  std::vector<v1::WorkerControl> Controls() {
    std::lock_guard<std::mutex> lock(mu_);
    return controls_;
  }

  // Test side.
  void Send(const v1::WorkerEvent& event) {
    std::lock_guard<std::mutex> lock(mu_);
    if (write_fd_ >= 0) (void)worker::WriteFrame(write_fd_, event);
  }
  void Progress(int64_t done, int64_t total) {
    v1::WorkerEvent event;
    event.mutable_progress()->set_done(done);
    event.mutable_progress()->set_total(total);
    Send(event);
  }
  // Sends the final status and exits with code 0.
  void Finish(const absl::Status& status) {
    v1::WorkerEvent event;
    *event.mutable_final()->mutable_status() = jobs::ToJobError(status);
    Send(event);
    Exit(false, 0);
  }
  // Exits without a final status.
  void Exit(bool signaled, int value) {
    std::lock_guard<std::mutex> lock(mu_);
    if (exited_) return;
    exit_.signaled = signaled;
    (signaled ? exit_.signal : exit_.exit_code) = value;
    exited_ = true;
    CloseWriteLocked();
    cv_.notify_all();
  }
  bool WaitForSignal(int signal) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] {
      for (int s : signals_) {
        if (s == signal) return true;
      }
      return false;
    });
  }

 private:
  void CloseWrite() {
    std::lock_guard<std::mutex> lock(mu_);
    CloseWriteLocked();
  }
  void CloseWriteLocked() {
    if (write_fd_ >= 0) ::close(write_fd_);
    write_fd_ = -1;
  }

  const int pid_;
  const int read_fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  int write_fd_;
  bool exited_ = false;
  WorkerExit exit_;
  std::vector<int> signals_;
  std::vector<v1::WorkerControl> controls_;
};

// What the scheduler owns and destroys when the job ends: forwards to a FakeWorker that the
// launcher keeps alive, so a test thread still waiting on a worker (WaitForSignal) never
// touches a destroyed one when the scheduler is faster than the test.
class FakeWorkerHandle : public WorkerProcess {
 public:
  explicit FakeWorkerHandle(std::shared_ptr<FakeWorker> worker) : worker_(std::move(worker)) {}
  int pid() const override { return worker_->pid(); }
  int event_fd() const override { return worker_->event_fd(); }
  void Signal(int signal) override { worker_->Signal(signal); }
  WorkerExit Wait() override { return worker_->Wait(); }
  absl::Status SendControl(const v1::WorkerControl& control) override { return worker_->SendControl(control); }

 private:
  std::shared_ptr<FakeWorker> worker_;
};

class FakeLauncher : public WorkerLauncher {
 public:
  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch(const WorkerLaunch& launch) override {
    int fds[2];
    if (::pipe(fds) != 0) return absl::InternalError("pipe");
    auto worker = std::make_shared<FakeWorker>(next_pid_++, fds[0], fds[1]);
    std::lock_guard<std::mutex> lock(mu_);
    workers_[launch.job_id] = worker.get();
    owned_.push_back(worker);
    launches_.push_back(launch);
    cv_.notify_all();
    return std::unique_ptr<WorkerProcess>(std::make_unique<FakeWorkerHandle>(std::move(worker)));
  }
  // The worker of `job_id` once launched (nullptr after 30 s).
  FakeWorker* WaitFor(int64_t job_id) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return workers_.count(job_id) > 0; });
    auto it = workers_.find(job_id);
    return it == workers_.end() ? nullptr : it->second;
  }
  std::vector<int64_t> LaunchOrder() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int64_t> ids;
    for (const WorkerLaunch& l : launches_) ids.push_back(l.job_id);
    return ids;
  }
  std::vector<WorkerLaunch> Launches() {
    std::lock_guard<std::mutex> lock(mu_);
    return launches_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int next_pid_ = 1000;
  std::map<int64_t, FakeWorker*> workers_;
  std::vector<std::shared_ptr<FakeWorker>> owned_;  // alive until the launcher goes
  std::vector<WorkerLaunch> launches_;
};

}  // namespace qatd::server::testing

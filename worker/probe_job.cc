// PROBE: a synthetic job for smoke tests of the daemon (ProbeSpec in specs.proto). It needs
// no model and no GPU, so end-to-end tests can drive the whole job life cycle quickly.
#include <time.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/jobs/options_common.h"
#include "worker/job_registry.h"

namespace qatd::worker {
namespace {

// Sleeps `ms`, in short slices so a cancel is noticed quickly unless ignored.
void SleepMs(int ms, const jobs::CancelToken& cancel, bool ignore_cancel) {
  while (ms > 0 && (ignore_cancel || !cancel.cancelled())) {
    const int slice = ms < 20 ? ms : 20;
    timespec ts{0, static_cast<long>(slice) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && (ignore_cancel || !cancel.cancelled())) {
    }
    ms -= slice;
  }
}

absl::Status RunProbe(const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
  const v1::ProbeSpec& spec = task.spec().probe();
  const int steps = spec.has_steps() ? spec.steps() : 10;
  reporter.Log(jobs::LogLevel::kInfo, absl::StrCat("probe: ", steps, " steps of ", spec.step_ms(), " ms (attempt ",
                                                   task.attempt(), ")"));
  for (int step = 1; step <= steps; ++step) {
    SleepMs(spec.step_ms(), cancel, spec.ignore_cancel());
    if (!spec.ignore_cancel() && cancel.cancelled()) {
      return absl::CancelledError(absl::StrCat("probe cancelled at step ", step - 1, " of ", steps));
    }
    reporter.Progress(step, steps, "steps", 0, -1);
    reporter.Metric("loss/kd", step, 1.0 / step);
  }
  if (spec.fail()) return absl::InternalError("probe failure requested");
  const std::filesystem::path dir = jobs::ResolveOutputDir(spec.output_dir(), task);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::filesystem::path file = dir / "probe.txt";
  {
    std::ofstream out(file);
    out << "probe job " << task.job_id() << " ran " << steps << " steps\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", file.string()));
  }
  reporter.Artifact(file.string(), "probe");
  return absl::OkStatus();
}

}  // namespace

void RegisterProbeJob(JobRegistry& registry) { registry.Register(v1::JOB_KIND_PROBE, RunProbe); }

}  // namespace qatd::worker

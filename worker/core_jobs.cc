// The registry entries of the job kinds implemented in core/jobs: the only translation unit of
// qatd-worker that includes core's job headers (LibTorch). Each entry is the kind's
// FromProto (core/jobs/<kind>_options.h, the same call the daemon made at submit time, now
// with the task's placement: device, output directory, resume) followed by its Run function.
//
// Re-runs: a job re-queued after a daemon restart (attempt > 1) resumes: KD_CACHE continues
// its cache, QAT and LAYERWISE continue from their resume/ checkpoint (exact resume); the
// short jobs simply run again.
#include "core/jobs/export_job.h"
#include "core/jobs/kd_cache_job.h"
#include "core/jobs/layerwise_job.h"
#include "core/jobs/lora_job.h"
#include "core/jobs/model_jobs.h"
#include "core/jobs/qat_job.h"
#include "core/train/dist_group.h"
#include "worker/data_parallel.h"
#include "worker/job_registry.h"

namespace qatd::worker {
namespace {

// FromProto(spec of the task's kind, task), then run(options, reporter, cancel).
template <typename Options, typename SpecOf, typename Run>
JobFunction Entry(SpecOf spec_of, Run run) {
  return [spec_of, run](const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
    absl::StatusOr<Options> options = Options::FromProto(spec_of(task.spec()), &task);
    if (!options.ok()) return options.status();
    return run(*options, reporter, cancel);
  };
}

// Entry through RunDataParallel (worker/data_parallel.h): the options get this rank's group
// (`dist`) and device.
template <typename Options, typename SpecOf, typename Run>
JobFunction DataParallelEntry(SpecOf spec_of, Run run) {
  return [spec_of, run](const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
    absl::StatusOr<Options> options = Options::FromProto(spec_of(task.spec()), &task);
    if (!options.ok()) return options.status();
    return RunDataParallel(task, reporter, cancel, [&](train::DistGroup* group) {
      Options o = *options;
      o.dist = group;
      if (group != nullptr) o.device = RankDevice(o.device, task, group->rank());
      return run(o, reporter, cancel);
    });
  };
}

}  // namespace

void RegisterCoreJobs(JobRegistry& registry) {
  // KD_CACHE, QAT, LAYERWISE and EVAL run data parallel when they ask for more than one device.
  registry.Register(v1::JOB_KIND_KD_CACHE, DataParallelEntry<jobs::KdCacheOptions>(
                                               [](const v1::JobSpec& s) -> const auto& { return s.kd_cache(); }, jobs::RunKdCache));
  registry.Register(v1::JOB_KIND_QAT, [](const v1::WorkerTask& task, jobs::Reporter& reporter, jobs::CancelToken& cancel) {
    absl::StatusOr<jobs::QatOptions> options = jobs::QatOptions::FromProto(task.spec().qat(), &task);
    if (!options.ok()) return options.status();
    return RunDataParallel(task, reporter, cancel, [&](train::DistGroup* group) {
      jobs::QatOptions o = *options;
      o.train.dist = group;
      if (group != nullptr) o.device = RankDevice(o.device, task, group->rank());
      return jobs::RunQat(o, reporter, cancel);
    });
  });
  registry.Register(v1::JOB_KIND_LAYERWISE,
                    DataParallelEntry<jobs::LayerwiseOptions>([](const v1::JobSpec& s) -> const auto& { return s.layerwise(); },
                                                              jobs::RunLayerwise));
  registry.Register(v1::JOB_KIND_CONVERT, Entry<jobs::ConvertOptions>(
                                              [](const v1::JobSpec& s) -> const auto& { return s.convert(); }, jobs::RunConvert));
  registry.Register(v1::JOB_KIND_SNAP,
                    Entry<jobs::SnapOptions>([](const v1::JobSpec& s) -> const auto& { return s.snap(); }, jobs::RunSnap));
  registry.Register(v1::JOB_KIND_EVAL,
                    DataParallelEntry<jobs::EvalJobOptions>([](const v1::JobSpec& s) -> const auto& { return s.eval(); },
                                                            jobs::RunEval));
  registry.Register(v1::JOB_KIND_GENERATE, Entry<jobs::GenerateJobOptions>(
                                               [](const v1::JobSpec& s) -> const auto& { return s.generate(); }, jobs::RunGenerateJob));
  // LORA trains through the e2e trainer: data parallel like QAT.
  registry.Register(v1::JOB_KIND_LORA, DataParallelEntry<jobs::LoraJobOptions>(
                                           [](const v1::JobSpec& s) -> const auto& { return s.lora(); }, jobs::RunLora));
  registry.Register(v1::JOB_KIND_EXPORT, Entry<jobs::ExportOptions>(
                                             [](const v1::JobSpec& s) -> const auto& { return s.export_(); }, jobs::RunExport));
}

}  // namespace qatd::worker

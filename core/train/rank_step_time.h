#pragma once
// Per-rank training-step times of a data-parallel job (issue #15: spot a straggling rank).
// Each rank times its own steps (Add, the step's wall time); at each log window the trainer
// calls Report() on every rank at the same step (it is a collective): one all-reduce of a
// [world] float64 tensor in which each rank fills its own slot, after which rank 0 reports the
// metric `rank/<r>/step_seconds` (rank r's mean step wall time over the window) for every r.
// The daemon exports it as qatd_job_rank_step_seconds{job_id, rank} and `qat status` lists it
// with the job's ranks. A one-rank job reports nothing.
//
// The time reported is the step's wall time minus the time the rank waited inside the step's
// blocking collectives (DistGroup::collective_seconds: the gradient all-reduce, ZeRO-1's
// broadcasts): in synchronous data parallel every rank's wall time is the slowest rank's, so
// only the rank's own work shows which one straggles (a slow GPU, data loading, a slow node's
// host side). Not thread-safe (the trainer's thread).

#include <cstdint>

#include "absl/status/status.h"
#include "core/common/reporter.h"

namespace qatd::train {

class DistGroup;

class RankStepTimes {
 public:
  // One step of this rank took `seconds` (wall time), `waited` of them inside collectives.
  void Add(double seconds, double waited = 0) {
    sum_ += seconds > waited ? seconds - waited : 0.0;
    ++count_;
  }
  // Every rank, at the same `step`: gathers the windows' means on rank 0, which reports them;
  // starts a new window. `dist` nullptr or of one rank (even a forced group): nothing. ABORTED
  // as the collective.
  absl::Status Report(DistGroup* dist, int64_t step, jobs::Reporter& reporter);

 private:
  double sum_ = 0;
  int64_t count_ = 0;
};

}  // namespace qatd::train

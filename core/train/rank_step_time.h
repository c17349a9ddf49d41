#pragma once
// Per-rank training-step times of a data-parallel job (issue #15: spot a straggling rank).
// Each rank times its own steps (Add, the step's wall time); at each log window the trainer
// calls Report() on every rank at the same step (it is a collective): one all-reduce of a
// [world] float64 tensor in which each rank fills its own slot, after which rank 0 reports the
// metric `rank/<r>/step_seconds` (rank r's mean step wall time over the window) for every r.
// The daemon exports it as qatd_job_rank_step_seconds{job_id, rank} and `qat status` lists it
// with the job's ranks. A one-rank job reports nothing.
//
// A step's wall time includes the time the rank waits inside the step's collectives (the
// gradient all-reduce, ZeRO-1's broadcasts), so ranks of one synchronous step take about as
// long; a rank's value stands out when its work outside them does (data loading, evaluation
// split, a slow node's host side), and every rank's value rises together when one of them
// straggles inside them. Not thread-safe (the trainer's thread).

#include <cstdint>

#include "absl/status/status.h"
#include "core/common/reporter.h"

namespace qatd::train {

class DistGroup;

class RankStepTimes {
 public:
  // One step of this rank took `seconds` (wall time).
  void Add(double seconds) {
    sum_ += seconds;
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

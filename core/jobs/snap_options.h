#pragma once
// The SNAP job's options (seed snap_and_test_v2.py, spec §10).
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to the job (core/jobs/*_job.h).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

struct SnapOptions {
  std::string model;              // required
  std::string checkpoint;         // required
  bool fp16 = false;              // --fp16 / --ane: the ANE snap (spec §10.2)
  bool test_generation = true;    // greedy generation on the seed's 4 prompts (needs a tokenizer)
  std::string tokenizer;          // default: the model directory
  int64_t max_new_tokens = 128;
  std::string device = "auto";
  std::string output_dir;         // required
  // The spec's fields over these defaults. `task` (null at submit time) places the job:
  // device, output directory, resume on a re-run.
  static absl::StatusOr<SnapOptions> FromProto(const v1::SnapSpec& spec, const v1::WorkerTask* task = nullptr);
  absl::Status Validate() const;
};

}  // namespace qatd::jobs

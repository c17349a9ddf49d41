#pragma once
// The CONVERT job's options (seed convert_q4_to_q2.py / convert_v1_to_v2.py, spec §5, §11).
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to the job (core/jobs/*_job.h).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/quant/quant_config.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

// Q4 -> Q2 progressive conversion (spec §11) or V1 -> V2 (spec §5).
enum class ConvertMode { kQ4ToQ2, kV1ToV2 };
const char* ConvertModeName(ConvertMode mode);  // "q4_to_q2" | "v1_to_v2"

struct ConvertOptions {
  ConvertMode mode = ConvertMode::kQ4ToQ2;
  std::string model;              // required: base HF model
  std::string checkpoint;         // required: V1 or V2 (Q4) checkpoint
  int q4_rank = 4;                // only for seed .pt inputs without a config (qatd checkpoints carry theirs)
  int q2_mlp_rank = 32;
  int q2_attn_rank = 8;
  int q2_mlp_lut_size = 4;
  int q2_attn_lut_size = 16;
  quant::QuantConfig source_quant;  // V1 settings of a seed .pt V1 checkpoint
  bool eval = false;              // --eval: held-out KD loss before and after (needs kd_cache_dir)
  std::string kd_cache_dir;
  int64_t eval_samples = 40;      // the cache's last sequences scored before and after
  std::string device = "auto";
  uint64_t seed = 0;              // random init of the new rank components
  // q4_to_q2: the Q2 indices by GPTQ (needs kd_cache_dir) instead of the nearest entry, and
  // each reduced LUT fitted to its layer (kmeans) instead of reduced from the LUT values.
  quant::Rounding rounding = quant::Rounding::kNearest;
  int64_t calibration_sequences = 128;
  bool fit_luts = false;          // lut_init "kmeans"
  std::string output_dir;         // required
  // The spec's fields over these defaults. `task` (null at submit time) places the job:
  // device, output directory, resume on a re-run.
  static absl::StatusOr<ConvertOptions> FromProto(const v1::ConvertSpec& spec, const v1::WorkerTask* task = nullptr);
  absl::Status Validate() const;
};

}  // namespace qatd::jobs

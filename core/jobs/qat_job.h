#pragma once
// The QAT job (DESIGN.md §1): end-to-end training of a V1 or V2 student from the KD cache
// (seed train_anemll_qat.py and train_v2_simple.py, spec §9), then optional V1 snapping.
//
// Student: V1 from the base model (+ --init-state: a qatd checkpoint or the seed's .pt);
// V2 from a V1 checkpoint (converted, spec §5), a V2 checkpoint (resume a V2 state, e.g. after
// CONVERT q4-to-q2), or from scratch (SVD init); V2 indices are frozen before training.
// Training: core/train/e2e_trainer.h (held-out eval, best kept, exact resume).
// Output (output_dir):
//   final/              the result checkpoint (core/train/student.h layout + the seed's
//                       model_state_dict.pt and indices.pt); registered as artifact "checkpoint"
//   best/, resume/, training_log.csv   the trainer's files (best/ also gets best_state_dict.pt)
// Metrics at the end: eval/kd_initial, eval/kd_best, eval/kd_final (after the snap, when
// snapping), eval/top1_final, eval/ppl_final, model/dense_bytes, model/quantized_bytes.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/common/reporter.h"
#include "core/jobs/qat_options.h"
#include "core/quant/quant_config.h"

namespace qatd::jobs {


absl::Status RunQat(const QatOptions& options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs

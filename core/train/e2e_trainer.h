#pragma once
// End-to-end QAT from the KD cache (spec §9; seed train_anemll_qat.py / train_v2_simple.py,
// the reference's train_e2e), with the fixes issue #5 asks for.
//
// Loop: each optimizer step runs grad_accum micro-batches of batch_size cached sequences
// (seeded shuffle, epoch after epoch) through the student, computes the global loss
// (L_KD + hard_top1_weight * L_top1 + hard_full_weight * L_full, core/train/losses.h) and
// backpropagates loss / grad_accum; then optional grad-norm clipping, AdamW
// (core/train/optimizer.h) at lr * schedule(step).
//
// Differences from the reference, on purpose:
//  - Evaluation uses a held-out split (the last eval_samples sequences of the cache, which
//    training never reads; spec §17.12), and reports KD loss, top-1 agreement and perplexity.
//  - The best state by held-out KD loss is kept, starting with the initial state (step 0):
//    the trainer never ends worse on held-out data than it started. With early_stop_patience
//    > 0, training stops after that many evaluations without improvement. At the end the
//    student holds the best state.
//  - Clipping is applied whenever clip_grad_norm > 0 (the reference clips only with use_fp16).
//  - Non-finite loss or gradient norm: the step is not applied and the job fails with
//    FAILED_PRECONDITION naming the step; the last good checkpoints stay on disk.
//  - Warmup starts at lr / warmup (no lr-0 first step, spec §17.11).
//
// Files under output_dir:
//   resume/             the student + optimizer.safetensors + trainer_state.json (step, data
//                       cursor, best eval, patience counter, log rows), written every
//                       save_steps, at every evaluation and on cancel. With resume = true a
//                       killed job continues from there and ends bit-identical (same device and
//                       thread count) to an uninterrupted run.
//   best/               the best student so far (SaveStudent layout)
//   training_log.csv    step, train_loss, eval_loss, lr, elapsed_sec (the seed's columns)
// Writes are atomic.
//
// Reporter: Progress in "steps"; metrics loss/total, loss/kd, loss/hard_top1, loss/hard_full
// (means over each logging window), train/lr, train/tokens_per_second, eval/kd, eval/top1,
// eval/ppl; log lines; no artifacts (the job functions register them).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/common/reporter.h"
#include "core/train/e2e_options.h"
#include "core/train/student.h"

namespace qatd::train {


struct EvalPoint {
  int64_t step = 0;
  double kd = 0, top1 = 0, ppl = 0;
};

struct E2eResult {
  EvalPoint initial;
  EvalPoint best;
  EvalPoint last;            // the last evaluation (of the state at the last step)
  int64_t steps = 0;         // optimizer steps taken in total (including before a resume)
  bool early_stopped = false;
  bool resumed = false;
  double tokens_per_second = 0;  // training throughput of this run (eval excluded)
  double train_loss_last = 0;    // mean total loss of the last logging window
};

// Trains `student` in place; on success it holds the best state. CANCELLED after a cancel
// (resume checkpoint written).
absl::StatusOr<E2eResult> TrainE2e(Student& student, const E2eOptions& options, jobs::Reporter& reporter,
                                   jobs::CancelToken& cancel);

}  // namespace qatd::train

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
#include "core/jobs/reporter.h"
#include "core/train/student.h"

namespace qatd::train {

struct E2eOptions {
  std::string kd_cache_dir;      // required
  int64_t eval_samples = 40;     // held-out sequences (the cache's last); >= 1
  // Trainable set (spec §9.1). V1: weights and/or scales (both really train both, spec
  // §17.1 fix in core/quant). V2: scales (A, B, g) or g_only; weights are not trainable.
  bool train_weights = false;
  bool train_scales = false;
  bool train_g_only = false;
  bool train_mlp_only = false;

  int64_t max_steps = 1000;
  int64_t batch_size = 32;
  int64_t grad_accum = 1;
  double lr = 1e-5;
  double weight_decay = 0.01;
  double temperature = 2.0;
  double hard_top1_weight = 0.0;
  double hard_full_weight = 0.0005;
  int64_t logging_steps = 50;
  int64_t eval_steps = 200;      // 0 = evaluate only at the start and the end
  int64_t save_steps = 0;        // resume checkpoint every N steps (0 = only at evaluations / cancel)
  bool cosine = false;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  double clip_grad_norm = 0.0;   // 0 = off
  int64_t early_stop_patience = 0;  // evaluations without improvement before stopping; 0 = off
  uint64_t seed = 0;             // data order
  int64_t eval_batch_size = 8;
  int64_t chunk_rows = 1024;     // full-vocabulary rows per chunk (hard_full, eval)
  // V2: the reference's factored per-rank STE forward instead of the dense fp16-STE weight
  // (core/quant/quant_linear_v2.h V2ForwardPath::kDenseSte).
  bool v2_factored_forward = false;

  std::string output_dir;        // required
  bool resume = false;           // continue from output_dir/resume when present

  // Test seam: return ABORTED right after the resume checkpoint of this step is durable
  // (as if the process had been killed then). 0 = off.
  int64_t testing_crash_after_step = 0;

  absl::Status Validate() const;  // INVALID_ARGUMENT naming the field
};

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

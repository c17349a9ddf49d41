#pragma once
// Layer-by-layer QAT from the KD cache (spec §8; the reference's train_layer /
// train_all_layers, scripts/train_anemll_lbl.py --optimize-scales), with the fixes issue #5
// asks for.
//
// For each decoder layer i (all layers in order, or `layers`): freeze everything, make layer
// i's quantized linears trainable (scales and/or weights; train_mlp_only skips q/k/v/o), new
// AdamW (lr, weight_decay, no schedule, no clipping: spec §8.1), then run the layer's steps.
// One step = grad_accum micro-batches of batch_size training sequences (one seeded stream over
// the training split for the whole run), each backpropagating
//   (local_weight * L_local + global_weight * (L_KD + hard_top1 * L_top1 + hard_full * L_full)) / grad_accum
// (spec §7.5). The global part runs the whole model (every layer quantized, only layer i
// trainable). L_local (spec §7.4, core/train/losses.h LocalMlpLoss) compares layer i's MLP
// output y_q with the output y_fp of the same MLP built from the ORIGINAL float weights (the
// base model's gate/up/down, cast to the model dtype, computed in fp32), both on the student's
// post-attention-norm input of layer i, on up to local_tokens rows of the B x (L-1) positions
// drawn uniformly without replacement.
// Steps per layer: steps_per_layer, or (when 0) epochs_per_layer passes over the training split
// (epochs_per_layer * batches_per_epoch / grad_accum, at least 1).
//
// Differences from the reference, on purpose:
//  - y_fp comes from the base model's original weights, not from a clone of layer i's current
//    latent weights (spec §7.4/§8.1): those equal the float weights only for a fresh V1 student
//    whose weights were never trained or snapped. After weight training (an init_state from an
//    LBL/E2E weights run, or a layer listed twice), a 'lut'-snapped checkpoint (weight holds
//    LUT values) or V2 layers, the reference reconstructs towards an already-quantized target.
//  - Evaluation uses a held-out split (the last eval_samples sequences, never trained on;
//    spec §17.12). Per layer, "before"/"after" use the first layer_eval_samples of it (the
//    reference's 20); the initial/final global numbers use all eval_samples.
//  - Keep-best per layer (keep_best_layer): when a layer's "after" held-out loss is worse than
//    "before", that layer's trainable tensors are restored to their state at the layer's start,
//    so the stage never ends worse than it started on the per-layer metric.
//  - Non-finite loss or gradient norm: the step is not applied and the job fails with
//    FAILED_PRECONDITION naming the (global) step; the last resume checkpoint stays on disk.
//
// Files under output_dir:
//   resume/            the student + trainer_state.json (position in the layer list, step within
//                      the layer, global step, data cursor, per-layer table so far, the running
//                      layer's first/last losses, log rows) + optimizer.safetensors and
//                      layer_start.safetensors (the keep-best snapshot) while inside a layer.
//                      Written every save_steps (global steps), at every layer end and on
//                      cancel. With resume = true a killed job continues from there and ends
//                      bit-identical (same device and thread count) to an uninterrupted run.
//   training_log.csv   step, train_loss, eval_loss, lr, elapsed_sec, layer
// Writes are atomic.
//
// Data parallel (options.dist with N > 1 ranks, issue #15): every rank runs this with the same
// options; batch_size is per rank, as in QAT: the stream gives rank r its shard of each global
// batch of batch_size x N (kd::KdStreamOptions::shard_index; resume/ records the global batch,
// so a run continues with any N that keeps it), each step sums the ranks' share-weighted gradients and
// loss terms (RunLblMicroBatches), evaluations split the held-out sequences over the ranks and
// all-reduce the sums (EvaluateSharded), and a cancel on any rank stops all of them at the
// same step. The ranks end with the same weights; rank 0 alone writes resume/ and
// training_log.csv. With local_weight == 0 the steps are those of one process with a batch_size
// of batch_size x N, up to the order of floating-point sums; L_local is per rank (lbl_step.h).
//
// Reporter: Progress in "steps" (global, total = layers x steps per layer); metrics
// loss/total, loss/local, loss/kd, loss/global, loss/hard_top1, loss/hard_full (means over each
// logging window, at the global step), eval/kd and eval/top1 (the per-layer eval subset, at
// the global step of each layer end, the state kept); one log line per layer and the table at
// the end; no artifacts.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/common/reporter.h"
#include "core/train/lbl_options.h"
#include "core/train/student.h"

namespace qatd::train {


// One row of the per-layer table. Losses are held-out KD losses on the per-layer eval subset;
// local/global are the training terms (unweighted) of the layer's first and last step.
struct LayerResult {
  int64_t layer = 0;
  double before = 0;
  double after = 0;         // measured after training the layer
  double improvement = 0;   // before - after
  bool restored = false;    // keep-best put the layer back (after > before)
  double local_first = 0, local_last = 0;
  double global_first = 0, global_last = 0;
  int64_t steps = 0;
  double seconds = 0;
};

struct LblResult {
  double initial_kd = 0, initial_top1 = 0;  // all eval_samples, before the first layer
  double final_kd = 0, final_top1 = 0;      // all eval_samples, after the last layer
  std::vector<LayerResult> layers;
  int64_t steps = 0;                        // optimizer steps in total (including before a resume)
  bool resumed = false;
};

nlohmann::json ToJson(const LayerResult& r);
nlohmann::json ToJson(const LblResult& r);

// Trains `student` in place, layer after layer; on success every parameter is frozen again.
// INVALID_ARGUMENT for bad options or a layer index outside [0, num_layers); FAILED_PRECONDITION
// when a layer has nothing to train or training diverges; CANCELLED after a cancel (resume
// checkpoint written).
absl::StatusOr<LblResult> TrainLayerwise(Student& student, const LblOptions& options, jobs::Reporter& reporter,
                                         jobs::CancelToken& cancel);

}  // namespace qatd::train

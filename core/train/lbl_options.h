#pragma once
// The layer-by-layer trainer's options (core/train/lbl_trainer.h runs them).
// LibTorch-free (qatd_core_base): the daemon validates a job's trainer settings at submit time.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/common/durable_hook.h"

namespace qatd::train {

class DistGroup;

struct LblOptions {
  std::string kd_cache_dir;        // required
  int64_t eval_samples = 100;      // held-out sequences (the cache's last); >= 1
  int64_t layer_eval_samples = 20; // per-layer before/after: the first N held-out (0 = all)
  // Trainable set of the current layer (spec §8.1). V1: scales and/or weights; V2: scales.
  bool train_scales = true;
  bool train_weights = false;
  bool train_mlp_only = false;
  std::vector<int64_t> layers;     // decoder layers in training order; empty = 0..n-1

  int64_t steps_per_layer = 0;     // optimizer steps per layer; 0 = epochs_per_layer decides
  int64_t epochs_per_layer = 2;    // passes over the training split per layer (steps_per_layer == 0)
  int64_t batch_size = 32;
  int64_t grad_accum = 1;
  double lr = 1e-3;
  double weight_decay = 0.01;
  double temperature = 2.0;
  double local_weight = 0.5;       // >= 0; 0 = no local loss (plain Forward)
  double global_weight = 0.5;      // >= 0; 0 = the model runs only up to layer i
  int64_t local_tokens = 128;      // rows sampled for L_local
  double hard_top1_weight = 0.0;
  double hard_full_weight = 0.0;
  bool keep_best_layer = true;     // restore a layer that ends worse than it started
  int64_t logging_steps = 10;      // metrics / csv rows every N global steps (and at layer ends)
  int64_t save_steps = 0;          // resume checkpoint every N global steps (0 = layer ends / cancel)
  uint64_t seed = 0;               // data order and L_local row sampling
  int64_t eval_batch_size = 8;
  int64_t chunk_rows = 1024;       // full-vocabulary rows per chunk (hard_full, eval)

  std::string output_dir;          // required
  bool resume = false;             // continue from output_dir/resume when present

  // Test seam (core/common/durable_hook.h): called after each resume checkpoint is durable,
  // with its global step; a non-OK status stops training with it.
  DurableHook after_durable;

  // Data parallel (lbl_trainer.h): this rank's group, not owned; null = one process.
  DistGroup* dist = nullptr;

  absl::Status Validate() const;   // INVALID_ARGUMENT naming the field
};

}  // namespace qatd::train

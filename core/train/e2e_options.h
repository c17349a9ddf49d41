#pragma once
// The end-to-end trainer's options (core/train/e2e_trainer.h runs them).
// LibTorch-free (qatd_core_base): the daemon validates a job's trainer settings at submit time.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/common/durable_hook.h"

namespace qatd::train {

class DistGroup;          // core/train/dist_group.h
class ExternalTrainable;  // core/train/trainable.h

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
  // KD over the top-K plus the cache's R random negatives (K + R candidates); the cache must
  // hold them. Evaluation stays over the top-K.
  bool kd_rand_neg = false;
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

  // Test seam (core/common/durable_hook.h): called after each resume checkpoint is durable,
  // with its step; a non-OK status stops training with it.
  DurableHook after_durable;

  // Data parallel (issue #15; not from the spec: the worker sets it). With a group of N ranks,
  // batch_size is per rank: every step trains on a global batch of batch_size * N * grad_accum
  // sequences, the same ones in the same order as one rank with batch_size * N. Rank 0 alone
  // writes files and reports; the others train and evaluate their share. nullptr = one rank.
  DistGroup* dist = nullptr;
  // With more than one rank: ZeRO-1, each rank keeping the optimizer state (Adam moments, fp32
  // masters: 12 of the 16 bytes per trained parameter) of its share of the parameters only.
  // Bit-identical to replicated state (tests/core/train/data_parallel_test.cc); false keeps a
  // full copy on every rank.
  bool shard_optimizer = true;

  // Trains these parameters instead of the trainable set above (the LoRA adapters of a LORA
  // job, core/train/lora.h); the train_* flags are then ignored. Not owned; nullptr = the
  // quantized layers' own parameters. CUDA graphs are off for external sets.
  ExternalTrainable* external = nullptr;

  absl::Status Validate() const;  // INVALID_ARGUMENT naming the field
};

}  // namespace qatd::train

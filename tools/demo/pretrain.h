#pragma once
// Brief next-token pretraining of a (tiny) Qwen3, so that tests and the demo get a teacher
// whose next-token distribution is actually peaked (a random-init model's is nearly uniform,
// which makes every KD loss meaningless).
//
// Pipeline: read the dataset (core/kd/dataset.h) -> hold out a few records for evaluation
// -> render (core/kd/render.h) + tokenize + pack into blocks of seq_len ids
// (core/kd/sample_stream.h, exactly as the KD cache does, so the teacher is trained on the
// text it will later be run on) -> AdamW with linear warmup + cosine decay, fp32 -> write an
// HF model directory (SaveQwen3 + the tokenizer files of the input) atomically.
//
// Loss: next-token cross-entropy over the whole vocabulary. With `vocab_sample` = 0 every step
// forms the full [tokens, V] logits (exact, chunked by HardFullLoss; ~60 GFLOP a step for
// V = 151936 at batch 16 x 64, too slow for a 2-core CPU). With `vocab_sample` = R > 0 the
// softmax of a step spans every token id occurring in the training blocks ("active" ids,
// which include every target) plus R ids drawn uniformly (with replacement) from the others,
// each drawn logit weighted by (inactive count / R): a sampled-softmax estimate of the full
// partition function. The drawn rows get the gradient that pushes them down, so the trained
// model is a normal Qwen3 whose full-vocabulary distribution is peaked; the before/after
// evaluation always uses the exact full-vocabulary softmax. In this mode a step touches only
// A + R rows of the [V, H] embedding (and lm_head when untied), so those matrices are updated
// row-wise by a "lazy" AdamW (the moments of untouched rows do not decay, as in torch's
// SparseAdam); the other parameters use torch::optim::AdamW. With the tiny configs this is
// ~20x cheaper per step than the dense update of a 151936 x 64 matrix.
//
// Determinism: the result is a function of the options (seed included), the data and the
// input model, for a given LibTorch build, device and thread count (BLAS reductions depend
// on the thread count).
//
// Reporter: Progress in "steps", Metric "pretrain/loss" (the step's training loss),
// "pretrain/lr", and at every evaluation "pretrain/eval_cross_entropy",
// "pretrain/eval_entropy", "pretrain/eval_top1_prob"; Log lines (data summary, bad records,
// results); Artifact(output_dir, "model").
// Cancel: polled between steps; returns CANCELLED and writes nothing.

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/common/reporter.h"
#include "core/kd/dataset.h"
#include "core/kd/render.h"
#include "core/model/qwen3_model.h"
#include "core/model/tokenizer.h"

namespace qatd::train {

struct PretrainOptions {
  std::string model_dir;   // HF Qwen3 directory with tokenizer.json (e.g. `qat-model init`); required
  std::string output_dir;  // required; must not exist unless `overwrite`
  bool overwrite = false;  // replace an existing output_dir (only after training succeeded)

  // Data (core/kd/dataset.h, render.h). Defaults render alpaca records with the chat template,
  // as the KD cache does.
  std::string dataset;                   // file or directory; required
  std::string format = "alpaca_chat";    // plain | alpaca | alpaca_chat | sharegpt
  std::string thinking = "none";         // none | on | off | both (render.h)
  std::string text_field = "text";       // plain JSON records
  std::string text_unit = "line";        // plain .txt: line | paragraph | file
  double holdout_fraction = 0.05;        // records held out for evaluation, in [0, 0.5]
  int64_t eval_blocks = 16;              // held-out blocks evaluated (>= 0; 0 = no evaluation)
  int64_t eval_every = 50;               // steps between evaluations (0 = before and after only)

  // Optimisation.
  int64_t seq_len = 64;        // block length L, in [2, max_position_embeddings]
  int64_t batch_size = 16;     // blocks per step, >= 1
  int64_t steps = 300;         // >= 1
  double lr = 1e-2;            // peak learning rate, > 0 (tiny demo teacher: 1e-2 beat 3e-3 at 300 steps)
  int64_t warmup_steps = 20;   // linear warmup from lr / warmup_steps, >= 0
  double min_lr_ratio = 0.1;   // cosine decays to lr * min_lr_ratio, in [0, 1]
  double weight_decay = 0.01;  // AdamW decoupled decay of matrices (not norms), >= 0
  double grad_clip = 1.0;      // max global gradient norm (0 = off)
  int64_t vocab_sample = 4096; // R of the sampled softmax (see the file comment); 0 = full vocabulary
  uint64_t seed = 0;           // data order, held-out split and vocabulary samples

  // Compute.
  std::string device = "cpu";      // cpu | cuda | cuda:N
  // at::set_num_threads(threads) for the process; 0 = leave LibTorch's setting. Default 1: the
  // tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
  // waiting made 2 threads ~7x slower per step than 1 (measured: 1.0 s vs 0.145 s).
  int threads = 1;
  std::string save_dtype = "";     // float32 | bfloat16 | float16; "" = the input's torch_dtype

  // INVALID_ARGUMENT naming the first bad field and its allowed range.
  absl::Status Validate() const;
};

// Next-token statistics of a model on blocks, every position but the last of each block
// predicting the next id, over the full vocabulary.
struct NextTokenStats {
  int64_t positions = 0;
  double cross_entropy = 0;  // mean -log p(next id), nats
  double entropy = 0;        // mean entropy of the next-token distribution, nats
  double top1_prob = 0;      // mean probability of the most likely token
  double top1_accuracy = 0;  // fraction of positions whose most likely token is the next id
};

struct PretrainSummary {
  std::string output_dir;
  int64_t steps = 0;               // steps run
  int64_t train_records = 0;
  int64_t heldout_records = 0;
  int64_t train_blocks = 0;        // distinct packed training blocks (cycled if fewer than needed)
  int64_t eval_blocks = 0;
  int64_t active_vocab = 0;        // distinct ids in the training blocks
  double first_loss = 0;           // mean training loss of the first min(10, steps) steps
  double last_loss = 0;            // mean training loss of the last min(10, steps) steps
  NextTokenStats before;           // held-out, input model (zeros when there is no held-out block)
  NextTokenStats after;            // held-out, trained model
  double seconds = 0;              // training loop wall time (evaluation and I/O excluded)
  double tokens_per_second = 0;    // training tokens / seconds
};

// Trains and writes output_dir (config.json, model.safetensors, tokenizer.json,
// tokenizer_config.json, generation_config.json when the input has one, pretrain.json with
// the options and the summary). The directory is assembled next to output_dir and renamed
// into place, so it either appears complete or not at all.
// Errors: INVALID_ARGUMENT (options; a dataset record the chat template rejects),
// NOT_FOUND (model/dataset), ALREADY_EXISTS (output_dir without overwrite),
// FAILED_PRECONDITION (fewer than batch_size training blocks; no eos token), CANCELLED,
// INTERNAL (non-finite loss, I/O), RESOURCE_EXHAUSTED (LibTorch OOM).
// `summary` (optional) receives the numbers.
absl::Status Pretrain(const PretrainOptions& options, jobs::Reporter& reporter,
                      jobs::CancelToken& cancel, PretrainSummary* summary = nullptr);

// Renders, tokenizes and packs `dataset` (its record order shuffled with `seed`) into at most
// `max_blocks` blocks of `seq_len` ids, each sample followed by `eos_id`; the final partial
// block is dropped. Returns [N, seq_len] int64 on the CPU (N may be 0).
absl::StatusOr<at::Tensor> PackBlocks(const kd::Dataset& dataset, const model::Tokenizer& tokenizer,
                                      const kd::RenderOptions& render, int64_t seq_len, int32_t eos_id,
                                      uint64_t seed, int64_t max_blocks);

// NextTokenStats of `model` on `blocks` ([N, L] integer ids, L >= 2), evaluated
// `batch_size` blocks at a time without gradients (the full [batch, L, V] logits exist per
// batch). Errors: INVALID_ARGUMENT for bad shapes or ids outside the vocabulary.
absl::StatusOr<NextTokenStats> MeasureNextToken(model::Qwen3Model& model, const at::Tensor& blocks,
                                                int64_t batch_size = 4);

}  // namespace qatd::train

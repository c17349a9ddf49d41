#pragma once
// Training losses of the reference QAT code (spec §7): top-K knowledge distillation, the two
// hard-label terms, the per-sequence evaluation form and the local MLP reconstruction loss.
//
// Notation (spec §7): B = batch, L = sequence length, S = L - 1 scored positions, H = hidden
// size, V = vocabulary, K = teacher top-K. `hidden` is the student's final hidden state
// [B, L, H]; every loss uses hidden[:, :-1] (position i predicts token i + 1), so the last
// position always gets zero gradient. `lm_head_weight` W [V, H] is the lm_head / tied embedding.
// `topk_idx` [B, S, K] (int32/int64) are the teacher's top-K ids sorted by teacher logit, index 0
// = teacher argmax; `topk_logits` [B, S, K] are the teacher's raw logits for them.
//
// All losses are computed in float32 whatever the input dtype, return a 0-dim float32 tensor and
// are differentiable (autograd) w.r.t. hidden and W (and y_q for LocalMlpLoss). The tensor
// functions throw c10::Error (TORCH_CHECK) on shape/dtype mismatches; ComputeKdLoss validates
// first and returns absl::Status instead. Stateless and thread-safe (grad mode is thread-local).

#include <ATen/ATen.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/train/train_options.h"

namespace qatd::train {

// Top-K KD loss, spec §7.1 (reference compute_kd_loss_batch):
//   s_j = <h, W[c_j]> for the K candidates only (rows of W are gathered; the full-vocabulary
//         logits are never formed),
//   p = softmax(t / T), log q = log_softmax(s / T), both renormalised over the K candidates,
//   L_KD = T^2 * mean over the B*S positions of sum_j p_j (log p_j - log q_j).
// hidden [B, L, H], lm_head_weight [V, H], topk_idx [B, L-1, K] int, topk_logits [B, L-1, K];
// temperature T > 0.
at::Tensor TopKKdLoss(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                      const at::Tensor& topk_idx, const at::Tensor& topk_logits,
                      double temperature);

// Candidate-set hard-label loss ("hard_top1"), T = 1:
//   L_top1 = mean over positions of -log_softmax(s)[0],  s_j = <h, W[c_j]>, j < K,
// i.e. cross-entropy of the teacher top-1 under the student's softmax renormalised over the K
// teacher candidates. DELIBERATE DIFFERENCE (spec §7.2, §17.2): the reference (505b9fe) applies
// the full-vocabulary CE below for hard_top1_weight too, collapsing both names into one loss; we
// keep them distinct (this is the older train_qat.py meaning of hard_top1). To reproduce the
// reference, use HardFullLoss with weight w1 + w2.
// hidden [B, L, H], lm_head_weight [V, H], topk_idx [B, L-1, K] int.
at::Tensor HardTop1Loss(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                        const at::Tensor& topk_idx);

// Full-vocabulary hard-label loss ("hard_full"), spec §7.2, T = 1:
//   z = h W^T [N, V] (N = B*S), y = c_0 (teacher top-1),
//   L_full = mean over the N positions of logsumexp(z_n) - z_n[y_n].
// Computed `chunk_rows` positions at a time: at most chunk_rows x V logits exist at any moment,
// in the forward and in the backward (which recomputes each chunk's logits instead of saving
// them; the gradient is exact, not approximated). chunk_rows >= 1; a value >= N means one chunk.
// hidden [B, L, H], lm_head_weight [V, H], topk_idx [B, L-1, K] int (only index 0 is used).
at::Tensor HardFullLoss(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                        const at::Tensor& topk_idx, int64_t chunk_rows = 1024);


// Terms of one global-loss evaluation, each a 0-dim float32 tensor. hard_top1 / hard_full are
// undefined (at::Tensor()) when their weight is 0 (the term is not computed).
struct KdLossTerms {
  at::Tensor total;
  at::Tensor kd;
  at::Tensor hard_top1;
  at::Tensor hard_full;
};

// The training loss: TopKKdLoss + weighted HardTop1Loss + weighted HardFullLoss (chunked by
// `chunk_rows`). Shapes as above. INVALID_ARGUMENT on bad weights or inconsistent shapes/dtypes
// (message names the tensor and the expected shape); INTERNAL/RESOURCE_EXHAUSTED if LibTorch
// throws.
absl::StatusOr<KdLossTerms> ComputeKdLoss(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                                          const at::Tensor& topk_idx, const at::Tensor& topk_logits,
                                          const KdLossWeights& weights, int64_t chunk_rows = 1024);

// Evaluation form, spec §7.3 (reference evaluate_kd_loss): TopKKdLoss (no hard terms) of each
// sequence b on its own, then the arithmetic mean over the B sequences. Equals TopKKdLoss when
// every sequence has the same length (always true for one padded-free batch); exists so that
// evaluation numbers are defined the way the reference reports them. Shapes as TopKKdLoss.
at::Tensor EvalKdLossPerSequence(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                                 const at::Tensor& topk_idx, const at::Tensor& topk_logits,
                                 double temperature = 2.0);

// Options of the local MLP reconstruction loss (spec §7.4; defaults are the reference's).
struct LocalMlpLossOptions {
  double alpha = 0.8;          // weight of the direction (RMS-normalised) term
  double rms_eps = 1e-6;       // rms(v) = v / sqrt(mean(v^2, last dim) + rms_eps)
  double max_loss = 10.0;      // clamp; also the constant returned for non-finite values
  int64_t max_tokens = 128;    // rows sampled (uniformly, without replacement) when more are valid
};

// Local MLP reconstruction loss, spec §7.4 (reference LocalMLPLoss, LBL only):
//   L = alpha * MSE(rms(y_q), rms(y_fp)) + (1 - alpha) * MSE(y_q, y_fp) / max(mean(y_fp^2), 1e-8),
// MSE = mean over all elements of the used rows, clamped at max_loss (zero gradient when the
// clamp is active). If y_q or L holds a non-finite value the result is the constant max_loss,
// which does not require grad (as the reference; callers that backprop only this term must
// check requires_grad()).
// Rows: y_q and y_fp are [N, H] or [B, S, H] (flattened to rows); `mask` (optional, N or [B, S]
// elements, nonzero = valid) drops invalid rows. With at most max_tokens valid rows all of them
// are used in order (deterministic); otherwise max_tokens are drawn with at::randperm on
// `generator` (default CPU generator when undefined). y_fp is treated as a constant (detached).
at::Tensor LocalMlpLoss(const at::Tensor& y_q, const at::Tensor& y_fp,
                        const c10::optional<at::Tensor>& mask = c10::nullopt,
                        const LocalMlpLossOptions& options = {},
                        c10::optional<at::Generator> generator = c10::nullopt);

}  // namespace qatd::train

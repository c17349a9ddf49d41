#include "core/train/losses.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/cuda/fused_ops.h"
#include "core/common/torch_status.h"

namespace qatd::train {
namespace {

std::string ShapeStr(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) absl::StrAppend(&out, i ? ", " : "", t.size(i));
  return out + "]";
}

// Shape checks shared by the KD-style losses; returns an empty string when consistent.
std::string CheckKdShapes(const at::Tensor& hidden, const at::Tensor& w, const at::Tensor& idx,
                          const at::Tensor* logits) {
  if (!hidden.defined() || hidden.dim() != 3 || hidden.size(1) < 2)
    return absl::StrCat("hidden must be [B, L, H] with L >= 2, got ",
                        hidden.defined() ? ShapeStr(hidden) : "undefined");
  const int64_t b = hidden.size(0), s = hidden.size(1) - 1, h = hidden.size(2);
  if (!w.defined() || w.dim() != 2 || w.size(1) != h)
    return absl::StrCat("lm_head_weight must be [V, ", h, "], got ",
                        w.defined() ? ShapeStr(w) : "undefined");
  if (!idx.defined() || idx.dim() != 3 || idx.size(0) != b || idx.size(1) != s || idx.size(2) < 1)
    return absl::StrCat("topk_idx must be [", b, ", ", s, ", K] with K >= 1, got ",
                        idx.defined() ? ShapeStr(idx) : "undefined");
  if (idx.scalar_type() != at::kLong && idx.scalar_type() != at::kInt)
    return absl::StrCat("topk_idx must be int32 or int64, got ", c10::toString(idx.scalar_type()));
  if (logits != nullptr && (!logits->defined() || !logits->sizes().equals(idx.sizes())))
    return absl::StrCat("topk_logits must be ", ShapeStr(idx), ", got ",
                        logits->defined() ? ShapeStr(*logits) : "undefined");
  return "";
}

// Student logits of the K candidates, s_j = <h, W[c_j]>: [B, S, K] float32. Gathers K rows of W
// per position (spec §7.1: the full-vocabulary logits are not computed).
at::Tensor CandidateLogits(const at::Tensor& hidden, const at::Tensor& w, const at::Tensor& idx) {
  at::Tensor h = hidden.slice(/*dim=*/1, 0, hidden.size(1) - 1);              // [B, S, H]
  at::Tensor wc = w.index_select(0, idx.reshape({-1}).to(at::kLong))
                      .view({idx.size(0), idx.size(1), idx.size(2), w.size(1)});  // [B, S, K, H]
  return at::matmul(wc, h.unsqueeze(-1)).squeeze(-1).to(at::kFloat);          // [B, S, K]
}

// Full-vocabulary CE against `target`, recomputing logits chunk by chunk in the backward so that
// no more than chunk_rows x V logits are ever alive (autograd would otherwise save every chunk's
// logits for logsumexp's backward, i.e. the whole [N, V] again).
struct ChunkedFullVocabCe : public torch::autograd::Function<ChunkedFullVocabCe> {
  // h [N, H], w [V, H], target [N] int64. Returns the mean CE (0-dim float32).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h,
                            const at::Tensor& w, const at::Tensor& target, int64_t chunk_rows) {
    const int64_t n = h.size(0);
    at::Tensor sum = at::zeros({}, h.options().dtype(at::kDouble));
    std::vector<at::Tensor> lse_chunks;  // kept for the backward when the fused kernels ran
    for (int64_t begin = 0; begin < n; begin += chunk_rows) {
      const int64_t end = std::min(n, begin + chunk_rows);
      at::Tensor z = at::matmul(h.slice(0, begin, end), w.t());  // [c, V] in the model dtype
      at::Tensor t = target.slice(0, begin, end).unsqueeze(1);
      at::Tensor lse;
      if (cuda::TryRowLogSumExp(z, &lse)) {
        // One read of z (core/cuda): lse - z[y] per row.
        sum += (lse - z.gather(1, t).squeeze(1).to(at::kFloat)).sum().to(at::kDouble);
        lse_chunks.push_back(lse);
        continue;
      }
      // fp32 log-softmax of the model-dtype logits: with the dtype argument LibTorch's CUDA
      // kernel reads bf16/fp16 and writes fp32 in one pass; elsewhere it upcasts first.
      at::Tensor logp = at::log_softmax(z, /*dim=*/1, at::kFloat);
      sum -= logp.gather(1, t).sum().to(at::kDouble);
    }
    const bool fused = !lse_chunks.empty() && static_cast<int64_t>(lse_chunks.size()) * chunk_rows >= n;
    ctx->save_for_backward({h, w, target, fused ? at::cat(lse_chunks) : at::empty({0}, h.options().dtype(at::kFloat))});
    ctx->saved_data["chunk_rows"] = chunk_rows;
    ctx->saved_data["fused"] = fused;
    return (sum / static_cast<double>(n)).to(at::kFloat);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& h = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor& target = saved[2];
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const bool need_h = ctx->needs_input_grad(0);
    const bool need_w = ctx->needs_input_grad(1);
    const int64_t n = h.size(0);
    at::Tensor g = grad_out[0].to(at::kFloat) / static_cast<double>(n);
    at::Tensor grad_h = need_h ? at::empty_like(h) : at::Tensor();
    at::Tensor grad_w = need_w ? at::zeros_like(w, w.options().dtype(at::kFloat)) : at::Tensor();
    const bool fused = ctx->saved_data["fused"].toBool();
    const at::Tensor& lse_all = saved[3];
    for (int64_t begin = 0; begin < n && (need_h || need_w); begin += chunk_rows) {
      const int64_t end = std::min(n, begin + chunk_rows);
      at::Tensor h_c = h.slice(0, begin, end);
      at::Tensor z = at::matmul(h_c, w.t());  // [c, V] in the model dtype, recomputed
      at::Tensor t = target.slice(0, begin, end);
      // d(lse(z) - z[y]) / dz = softmax(z) - onehot(y). The products with it run in the model
      // dtype, as autograd does for the reference's `logits.float()`: its backward casts dL/dz
      // to bf16 before the lm_head matmul. (An fp32 product here was a tensor-core-less GEMM:
      // 24 ms of a 105 ms step on an H100.)
      at::Tensor dz_lp, g_lp;
      if (fused && cuda::TryCrossEntropyGrad(z, lse_all.slice(0, begin, end), t, 1.0 / static_cast<double>(n), &dz_lp)) {
        // One pass over z; the upstream gradient (a device scalar) multiplies the small
        // products instead of z, so no host sync reads it.
        g_lp = grad_out[0].to(w.scalar_type());
      } else {
        at::Tensor dz = at::softmax(z, /*dim=*/1, at::kFloat);
        dz.scatter_add_(1, t.unsqueeze(1), at::full({end - begin, 1}, -1.0, dz.options()));
        dz.mul_(g);
        dz_lp = dz.to(w.scalar_type());
      }
      if (need_h) {
        at::Tensor gh = at::matmul(dz_lp, w);
        grad_h.slice(0, begin, end).copy_(g_lp.defined() ? gh * g_lp : gh);
      }
      if (need_w) {
        at::Tensor gw = at::matmul(dz_lp.t(), h_c.to(w.scalar_type()));
        grad_w.add_(g_lp.defined() ? gw * g_lp : gw);
      }
    }
    if (need_w) grad_w = grad_w.to(w.scalar_type());
    return {grad_h, grad_w, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor TopKKdLoss(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                      const at::Tensor& topk_idx, const at::Tensor& topk_logits,
                      double temperature) {
  std::string err = CheckKdShapes(hidden, lm_head_weight, topk_idx, &topk_logits);
  TORCH_CHECK(err.empty(), "TopKKdLoss: ", err);
  TORCH_CHECK(temperature > 0 && std::isfinite(temperature),
              "TopKKdLoss: temperature must be > 0, got ", temperature);
  // spec §7.1: both distributions renormalised over the K candidates, at temperature T.
  at::Tensor s = CandidateLogits(hidden, lm_head_weight, topk_idx);      // [B, S, K]
  at::Tensor t = topk_logits.to(at::kFloat);                              // teacher, cast to fp32
  at::Tensor log_p = at::log_softmax(t / temperature, /*dim=*/-1);
  at::Tensor log_q = at::log_softmax(s / temperature, /*dim=*/-1);
  at::Tensor kl = (log_p.exp() * (log_p - log_q)).sum(-1);               // [B, S]
  return kl.mean() * (temperature * temperature);
}

at::Tensor HardTop1Loss(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                        const at::Tensor& topk_idx) {
  std::string err = CheckKdShapes(hidden, lm_head_weight, topk_idx, nullptr);
  TORCH_CHECK(err.empty(), "HardTop1Loss: ", err);
  // Deliberately not the reference's full-vocab CE (spec §17.2): softmax over the K candidates.
  at::Tensor s = CandidateLogits(hidden, lm_head_weight, topk_idx);  // [B, S, K]
  return -at::log_softmax(s, /*dim=*/-1).select(-1, 0).mean();
}

at::Tensor HardFullLoss(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                        const at::Tensor& topk_idx, int64_t chunk_rows) {
  std::string err = CheckKdShapes(hidden, lm_head_weight, topk_idx, nullptr);
  TORCH_CHECK(err.empty(), "HardFullLoss: ", err);
  TORCH_CHECK(chunk_rows >= 1, "HardFullLoss: chunk_rows must be >= 1, got ", chunk_rows);
  const int64_t h_dim = hidden.size(2);
  at::Tensor h = hidden.slice(1, 0, hidden.size(1) - 1).reshape({-1, h_dim});        // [N, H]
  at::Tensor target = topk_idx.select(-1, 0).reshape({-1}).to(at::kLong).contiguous();  // [N]
  return ChunkedFullVocabCe::apply(h, lm_head_weight, target, chunk_rows);
}

absl::StatusOr<KdLossTerms> ComputeKdLoss(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                                          const at::Tensor& topk_idx, const at::Tensor& topk_logits,
                                          const KdLossWeights& weights, int64_t chunk_rows) {
  if (absl::Status s = weights.Validate(); !s.ok()) return s;
  if (chunk_rows < 1)
    return absl::InvalidArgumentError(absl::StrCat("chunk_rows must be >= 1, got ", chunk_rows));
  std::string err = CheckKdShapes(hidden, lm_head_weight, topk_idx, &topk_logits);
  if (!err.empty()) return absl::InvalidArgumentError(err);
  return CatchTorchOr<KdLossTerms>("kd loss", [&]() -> absl::StatusOr<KdLossTerms> {
    KdLossTerms terms;
    terms.kd = TopKKdLoss(hidden, lm_head_weight, topk_idx, topk_logits, weights.temperature);
    terms.total = terms.kd;
    // spec §7.2 adds one CE with weight w1 + w2; we keep the two terms distinct (§17.2).
    if (weights.hard_top1_weight > 0) {
      terms.hard_top1 = HardTop1Loss(hidden, lm_head_weight, topk_idx);
      terms.total = terms.total + weights.hard_top1_weight * terms.hard_top1;
    }
    if (weights.hard_full_weight > 0) {
      terms.hard_full = HardFullLoss(hidden, lm_head_weight, topk_idx, chunk_rows);
      terms.total = terms.total + weights.hard_full_weight * terms.hard_full;
    }
    return terms;
  });
}

at::Tensor EvalKdLossPerSequence(const at::Tensor& hidden, const at::Tensor& lm_head_weight,
                                 const at::Tensor& topk_idx, const at::Tensor& topk_logits,
                                 double temperature) {
  std::string err = CheckKdShapes(hidden, lm_head_weight, topk_idx, &topk_logits);
  TORCH_CHECK(err.empty(), "EvalKdLossPerSequence: ", err);
  // spec §7.3: batch 1 per sequence, then the arithmetic mean over sequences.
  const int64_t b = hidden.size(0);
  at::Tensor sum = at::zeros({}, hidden.options().dtype(at::kFloat));
  for (int64_t i = 0; i < b; ++i) {
    sum = sum + TopKKdLoss(hidden.narrow(0, i, 1), lm_head_weight, topk_idx.narrow(0, i, 1),
                           topk_logits.narrow(0, i, 1), temperature);
  }
  return sum / static_cast<double>(b);
}

at::Tensor LocalMlpLoss(const at::Tensor& y_q, const at::Tensor& y_fp,
                        const c10::optional<at::Tensor>& mask, const LocalMlpLossOptions& options,
                        c10::optional<at::Generator> generator) {
  TORCH_CHECK(y_q.defined() && y_fp.defined() && y_q.dim() >= 2 && y_q.sizes().equals(y_fp.sizes()),
              "LocalMlpLoss: y_q and y_fp must have the same shape [N, H] or [B, S, H], got ",
              y_q.defined() ? ShapeStr(y_q) : "undefined", " and ",
              y_fp.defined() ? ShapeStr(y_fp) : "undefined");
  TORCH_CHECK(options.max_tokens >= 1, "LocalMlpLoss: max_tokens must be >= 1, got ",
              options.max_tokens);
  const int64_t h_dim = y_q.size(-1);
  at::Tensor q = y_q.reshape({-1, h_dim});
  at::Tensor fp = y_fp.detach().reshape({-1, h_dim});
  const int64_t n = q.size(0);
  at::Tensor rows;  // int64 row ids to use, or undefined for all rows
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->numel() == n, "LocalMlpLoss: mask must have ", n, " elements, got ",
                ShapeStr(*mask));
    rows = mask->reshape({-1}).ne(0).nonzero().squeeze(1);
  }
  const int64_t valid = rows.defined() ? rows.size(0) : n;
  auto make_constant = [&] { return at::full({}, options.max_loss, q.options().dtype(at::kFloat)); };
  if (valid == 0) return make_constant();
  if (valid > options.max_tokens) {
    // spec §7.4 step 1: uniform sample without replacement.
    at::Tensor perm = at::randperm(valid, generator, at::TensorOptions().dtype(at::kLong))
                          .slice(0, 0, options.max_tokens);
    rows = rows.defined() ? rows.index_select(0, perm) : perm;
  }
  if (rows.defined()) {
    q = q.index_select(0, rows);
    fp = fp.index_select(0, rows);
  }
  q = q.to(at::kFloat);
  fp = fp.to(at::kFloat);
  if (!at::isfinite(q).all().item<bool>()) return make_constant();  // spec §7.4 step 6

  auto rms = [&](const at::Tensor& v) {
    return v / at::sqrt(v.pow(2).mean(-1, /*keepdim=*/true) + options.rms_eps);
  };
  at::Tensor direction = at::mse_loss(rms(q), rms(fp));
  at::Tensor relative = at::mse_loss(q, fp) / std::max(fp.pow(2).mean().item<double>(), 1e-8);
  at::Tensor loss = options.alpha * direction + (1.0 - options.alpha) * relative;
  if (!std::isfinite(loss.item<double>())) return make_constant();
  return at::clamp_max(loss, options.max_loss);
}

}  // namespace qatd::train

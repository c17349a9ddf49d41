#include "core/train/evaluate.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/train/losses.h"

namespace qatd::train {

at::Tensor LmHeadWeight(model::Qwen3ModelImpl& model) {
  if (model.lm_head != nullptr) return model.lm_head->EffectiveWeight();
  return model.model->embed_tokens->weight;
}

absl::StatusOr<EvalResult> Evaluate(model::Qwen3ModelImpl& model, const kd::KdCacheReader& reader, kd::KdSplit split,
                                    const EvalOptions& options) {
  if (options.batch_size < 1) return absl::InvalidArgumentError("eval batch_size must be >= 1");
  if (split.size() <= 0) return absl::InvalidArgumentError("the evaluation split is empty");
  const int64_t n = options.max_sequences > 0 ? std::min(options.max_sequences, split.size()) : split.size();
  EvalResult result;
  double kd_sum = 0, ce_sum = 0;
  int64_t agree = 0;
  QATD_RETURN_IF_ERROR(CatchTorch("evaluate", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    const at::Device device = model.device();
    at::Tensor w = LmHeadWeight(model);
    for (int64_t begin = 0; begin < n; begin += options.batch_size) {
      const int64_t end = std::min(n, begin + options.batch_size);
      QATD_ASSIGN_OR_RETURN(kd::KdBatch batch, reader.Range(split.begin + begin, split.begin + end));
      at::Tensor ids = batch.input_ids.to(device, at::kLong);
      at::Tensor topk_idx = batch.topk_idx.to(device, at::kLong);
      at::Tensor topk_logits = batch.topk_logits.to(device);
      at::Tensor hidden = model.Forward(ids);
      // Sum of per-sequence losses (EvalKdLossPerSequence returns their mean).
      kd_sum += EvalKdLossPerSequence(hidden, w, topk_idx, topk_logits, options.temperature).item<double>() *
                static_cast<double>(end - begin);
      const int64_t h = hidden.size(-1);
      at::Tensor rows = hidden.narrow(1, 0, hidden.size(1) - 1).reshape({-1, h});
      at::Tensor targets = ids.narrow(1, 1, ids.size(1) - 1).reshape({-1});
      at::Tensor teacher_top1 = topk_idx.select(2, 0).reshape({-1});
      const int64_t rows_n = rows.size(0);
      const int64_t chunk = options.chunk_rows > 0 ? options.chunk_rows : rows_n;
      at::Tensor ce = at::zeros({}, hidden.options().dtype(at::kDouble));
      at::Tensor hits = at::zeros({}, hidden.options().dtype(at::kLong));
      for (int64_t r = 0; r < rows_n; r += chunk) {
        const int64_t len = std::min(chunk, rows_n - r);
        at::Tensor logits = at::matmul(rows.narrow(0, r, len), w.t()).to(at::kFloat);
        at::Tensor lse = at::logsumexp(logits, 1);
        at::Tensor tgt = targets.narrow(0, r, len);
        ce += (lse - logits.gather(1, tgt.unsqueeze(1)).squeeze(1)).to(at::kDouble).sum();
        hits += logits.argmax(1).eq(teacher_top1.narrow(0, r, len)).sum();
      }
      ce_sum += ce.item<double>();
      agree += hits.item<int64_t>();
      result.positions += rows_n;
    }
    return absl::OkStatus();
  }));
  result.sequences = n;
  result.kd = kd_sum / static_cast<double>(n);
  result.top1 = result.positions > 0 ? static_cast<double>(agree) / static_cast<double>(result.positions) : 0;
  result.ce = result.positions > 0 ? ce_sum / static_cast<double>(result.positions) : 0;
  result.ppl = std::exp(result.ce);
  return result;
}

absl::StatusOr<EvalResult> EvaluateSharded(model::Qwen3ModelImpl& model, const kd::KdCacheReader& reader,
                                           kd::KdSplit split, const EvalOptions& options, DistGroup* dist) {
  if (dist == nullptr || !dist->distributed()) return Evaluate(model, reader, split, options);
  if (split.size() <= 0) return absl::InvalidArgumentError("the evaluation split is empty");
  const int64_t n = options.max_sequences > 0 ? std::min(options.max_sequences, split.size()) : split.size();
  const int64_t per_rank = (n + dist->world_size() - 1) / dist->world_size();
  const int64_t begin = std::min(n, dist->rank() * per_rank), end = std::min(n, begin + per_rank);
  // kd * sequences, ce * positions, top1 * positions, sequences, positions: sums over ranks.
  at::Tensor sums = at::zeros({5}, at::kDouble);
  if (end > begin) {
    EvalOptions mine = options;
    mine.max_sequences = 0;
    QATD_ASSIGN_OR_RETURN(EvalResult r, Evaluate(model, reader, {split.begin + begin, split.begin + end}, mine));
    auto* p = sums.data_ptr<double>();
    p[0] = r.kd * static_cast<double>(r.sequences);
    p[1] = r.ce * static_cast<double>(r.positions);
    p[2] = r.top1 * static_cast<double>(r.positions);
    p[3] = static_cast<double>(r.sequences);
    p[4] = static_cast<double>(r.positions);
  }
  QATD_RETURN_IF_ERROR(dist->AllReduce(sums));
  const auto* p = sums.data_ptr<double>();
  EvalResult result;
  result.sequences = static_cast<int64_t>(p[3]);
  result.positions = static_cast<int64_t>(p[4]);
  result.kd = p[3] > 0 ? p[0] / p[3] : 0;
  result.ce = p[4] > 0 ? p[1] / p[4] : 0;
  result.top1 = p[4] > 0 ? p[2] / p[4] : 0;
  result.ppl = std::exp(result.ce);
  return result;
}

}  // namespace qatd::train

#include "core/train/lbl_step.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/packing.h"
#include "core/quant/quantize_model.h"
#include "core/train/evaluate.h"

namespace qatd::train {
namespace {

// Salt that separates the L_local row-sampling seeds from the data-order seeds.
constexpr uint64_t kLocalRowsSalt = 0x4c424c6c6f63616cULL;  // "LBLlocal"

double Nan() { return std::numeric_limits<double>::quiet_NaN(); }

// The student's forward for one micro-batch. Without L_local: Qwen3ModelImpl::Forward.
struct LayerForwardOut {
  at::Tensor hidden;  // [B, L, H] final-norm output (undefined when the global loss is off)
  at::Tensor mlp_in;  // [B, L, H] layer i's post-attention-norm input (L_local only)
  at::Tensor y_q;     // [B, L, H] layer i's MLP output (L_local only)
};

LayerForwardOut LayerForward(model::Qwen3ModelImpl& m, const at::Tensor& ids, int64_t layer, bool use_local,
                             bool use_global) {
  LayerForwardOut out;
  at::Tensor& hidden = out.hidden;
  at::Tensor& mlp_in = out.mlp_in;
  at::Tensor& y_q = out.y_q;
  if (!use_local) {
    hidden = m.Forward(ids);
  } else {
    // The forward, written out so that layer i's MLP input and output are at hand (the
    // reference registers a forward hook on layer i's mlp). It is Qwen3ModelImpl::Forward
    // step for step at no extra cost, except that layer i's residual add is out of place:
    // the decoder layer adds the residual into the MLP output in place, which would
    // overwrite y_q. Running Forward with residuals instead would recompute layer i's
    // attention just to get the MLP input.
    const int64_t len = ids.size(1);
    const model::RotaryTables rope = m.Rope(0, len);
    at::Tensor x = m.Embed(ids);
    for (int64_t j = 0; j < layer; ++j) x = m.model->layers[j]->forward(x, rope, 0, nullptr, j);
    auto& dl = *m.model->layers[layer];
    at::Tensor h = dl.self_attn->forward(dl.input_layernorm->forward(x), rope, 0, nullptr, layer) + x;
    mlp_in = dl.post_attention_layernorm->forward(h);
    y_q = dl.mlp->forward(mlp_in);
    if (use_global) {
      x = y_q + h;
      for (int64_t j = layer + 1; j < m.num_layers(); ++j) x = m.model->layers[j]->forward(x, rope, 0, nullptr, j);
      hidden = m.FinalNorm(x);
    }
  }
  return out;
}

// L_local of one micro-batch (spec §7.4); `micro_index` numbers the micro-batches of the run.
at::Tensor LocalLoss(const LblMicroContext& c, const at::Tensor& mlp_in, const at::Tensor& y_q, int64_t micro_index) {
  const at::Device device = mlp_in.device();
  // spec §7.4: positions [:, :-1] (the last one predicts nothing), up to local_tokens rows
  // drawn uniformly without replacement. The rows are drawn here rather than inside
  // LocalMlpLoss so that (a) the float MLP runs on the sampled rows only and (b) the row
  // index lives on the model's device (LocalMlpLoss draws its permutation on the CPU).
  const int64_t hdim = mlp_in.size(-1);
  at::Tensor in_rows = mlp_in.narrow(1, 0, mlp_in.size(1) - 1).reshape({-1, hdim});
  at::Tensor q_rows = y_q.narrow(1, 0, y_q.size(1) - 1).reshape({-1, hdim});
  const int64_t n = in_rows.size(0);
  if (n > c.o.local_tokens) {
    at::Generator gen = at::detail::createCPUGenerator(kd::MixSeed(c.o.seed ^ kLocalRowsSalt,
                                                                   static_cast<uint64_t>(micro_index)));
    at::Tensor rows = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, c.o.local_tokens);
    rows = rows.to(device);
    in_rows = in_rows.index_select(0, rows);
    q_rows = q_rows.index_select(0, rows);
  }
  at::Tensor y_fp;
  {
    // The reference target: the same input through the float MLP, fp32, no gradient.
    at::NoGradGuard no_grad;
    at::Tensor xin = in_rows.detach().to(at::kFloat);
    y_fp = at::linear(at::silu(at::linear(xin, c.fp->gate)) * at::linear(xin, c.fp->up), c.fp->down);
  }
  LocalMlpLossOptions lo;
  lo.max_tokens = std::max<int64_t>(1, q_rows.size(0));  // already sampled: use every row
  return LocalMlpLoss(q_rows, y_fp, c10::nullopt, lo);
}

}  // namespace

absl::StatusOr<FloatMlp> LoadFloatMlp(const model::Checkpoint& base, int64_t layer, at::ScalarType dtype,
                                      at::Device device) {
  FloatMlp mlp;
  const std::string prefix = absl::StrCat("model.layers.", layer, ".mlp.");
  at::Tensor* slots[3] = {&mlp.gate, &mlp.up, &mlp.down};
  const char* names[3] = {"gate_proj", "up_proj", "down_proj"};
  for (int k = 0; k < 3; ++k) {
    QATD_ASSIGN_OR_RETURN(model::TensorView view, base.Get(absl::StrCat(prefix, names[k], ".weight")));
    QATD_RETURN_IF_ERROR(CatchTorch("load float MLP", [&]() -> absl::Status {
      *slots[k] = quant::TensorFromView(view).to(dtype).to(device, at::kFloat);
      return absl::OkStatus();
    }));
  }
  return mlp;
}

// Freezes everything, applies the trainable set to every quantized layer, then freezes again
// whatever is not under "model.layers.<layer>." (spec §8.1 step 1).
absl::Status MakeLayerTrainable(Student& s, int64_t layer, const LblOptions& o) {
  QATD_RETURN_IF_ERROR(
      quant::ApplyTrainableSet(*s.registry, {o.train_weights && s.version == 1, o.train_scales, false, o.train_mlp_only}));
  const std::string prefix = absl::StrCat("model.layers.", layer, ".");
  for (auto& item : s.model->named_parameters(/*recurse=*/true)) {
    if (item.key().rfind(prefix, 0) != 0) item.value().set_requires_grad(false);
  }
  return absl::OkStatus();
}

// One optimizer step's worth of micro-batches (gradients accumulate); returns the mean terms.
// `first_micro` numbers the micro-batches of the whole run: micro-batch n samples its L_local
// rows from a CPU generator seeded with MixSeed(seed ^ salt, n), so the sampling needs no saved
// generator state to resume exactly and does not depend on the device.
absl::StatusOr<LossValues> RunLblMicroBatches(const LblMicroContext& c, kd::KdBatchStream& stream, AdamW& adam,
                                              int64_t first_micro, DistGroup* dist) {
  LossValues values;
  const bool sharded = dist != nullptr && dist->distributed();
  QATD_RETURN_IF_ERROR(CatchTorch("training step", [&]() -> absl::Status {
    adam.ZeroGrad();
    model::Qwen3ModelImpl& m = *c.s.model;
    const at::Device device = m.device();
    const bool use_local = c.o.local_weight > 0;
    const bool use_global = c.o.global_weight > 0;
    at::Tensor sums;  // [6] float: total, kd, top1, full, local, global
    for (int64_t micro = 0; micro < c.o.grad_accum; ++micro) {
      QATD_ASSIGN_OR_RETURN(kd::KdBatch batch, stream.Next());
      // Each term is a mean over the global batch's positions: a shard's mean weighs
      // rows / global_rows, and the ranks' sum is the global mean (as train_step.cc).
      const double share = sharded ? static_cast<double>(batch.rows()) / static_cast<double>(batch.global_rows) : 1.0;
      if (batch.rows() == 0) continue;  // an empty shard of a last partial batch
      at::Tensor ids = batch.input_ids.to(device, at::kLong);
      const LayerForwardOut fwd = LayerForward(m, ids, c.layer, use_local, use_global);
      at::Tensor total = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
      at::Tensor row = at::zeros({6}, at::TensorOptions().dtype(at::kFloat).device(device));
      if (use_global) {
        at::Tensor topk_idx = batch.topk_idx.to(device, at::kLong);
        at::Tensor topk_logits = batch.topk_logits.to(device);
        QATD_ASSIGN_OR_RETURN(KdLossTerms terms, ComputeKdLoss(fwd.hidden, LmHeadWeight(m), topk_idx, topk_logits,
                                                               c.weights, c.o.chunk_rows));
        total = total + c.o.global_weight * terms.total;
        row[1] = terms.kd.detach();
        if (terms.hard_top1.defined()) row[2] = terms.hard_top1.detach();
        if (terms.hard_full.defined()) row[3] = terms.hard_full.detach();
        row[5] = terms.total.detach();
      }
      if (use_local) {
        at::Tensor local = LocalLoss(c, fwd.mlp_in, fwd.y_q, first_micro + micro);
        total = total + c.o.local_weight * local.to(device);
        row[4] = local.detach().to(device);
      }
      if (sharded) {
        total = total * share;
        row = row * share;
      }
      row[0] = total.detach();
      if (total.requires_grad()) (total / static_cast<double>(c.o.grad_accum)).backward();
      sums = sums.defined() ? sums + row : row;
    }
    if (sharded) {
      std::vector<at::Tensor> grads;
      for (const auto& [name, p] : adam.params()) {
        if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
        grads.push_back(p.grad());
      }
      QATD_RETURN_IF_ERROR(dist->AllReduceSum(grads));
      at::Tensor reduced = sums.defined() ? sums.to(at::kFloat).cpu().contiguous() : at::zeros({6}, at::kFloat);
      QATD_RETURN_IF_ERROR(dist->AllReduce(reduced));
      sums = reduced;
    }
    at::Tensor mean = (sums / static_cast<double>(c.o.grad_accum)).to(at::kDouble).cpu();
    values.total = mean[0].item<double>();
    values.kd = use_global ? mean[1].item<double>() : Nan();
    values.hard_top1 = use_global && c.o.hard_top1_weight > 0 ? mean[2].item<double>() : Nan();
    values.hard_full = use_global && c.o.hard_full_weight > 0 ? mean[3].item<double>() : Nan();
    values.local = use_local ? mean[4].item<double>() : Nan();
    values.global = use_global ? mean[5].item<double>() : Nan();
    return absl::OkStatus();
  }));
  return values;
}

quant::TensorMap Snapshot(const std::vector<std::pair<std::string, at::Tensor>>& params) {
  at::NoGradGuard no_grad;
  quant::TensorMap m;
  for (const auto& [name, p] : params) m[name] = p.detach().clone();
  return m;
}

absl::Status Restore(const std::vector<std::pair<std::string, at::Tensor>>& params, const quant::TensorMap& snap) {
  return CatchTorch("restore layer", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (const auto& [name, p] : params) {
      auto it = snap.find(name);
      if (it == snap.end() || !it->second.sizes().equals(p.sizes())) {
        return absl::DataLossError(absl::StrCat("layer snapshot lacks ", name, " or has the wrong shape"));
      }
      p.copy_(it->second.to(p.device(), p.scalar_type()));
    }
    return absl::OkStatus();
  });
}


}  // namespace qatd::train

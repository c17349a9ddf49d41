#include "core/train/train_common.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/quant/quant_linear_v2.h"
#include "core/quant/quantize_model.h"

namespace qatd::train {
namespace fs = std::filesystem;

void SelectV2Forward(Student& s, bool factored) {
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    if (auto* v2 = dynamic_cast<quant::QuantLinearV2*>(layer.get())) {
      v2->set_forward_path(factored ? quant::V2ForwardPath::kAuto : quant::V2ForwardPath::kDenseSte);
    }
  }
}

absl::StatusOr<kd::KdSplits> HeldOutSplits(const kd::KdCacheReader& reader, int64_t eval_samples) {
  const int64_t n = reader.num_sequences();
  if (eval_samples >= n) {
    return absl::InvalidArgumentError(absl::StrCat("eval_samples (", eval_samples, ") must be smaller than the ", n,
                                                   " sequences of the KD cache ", reader.dir(),
                                                   ": the held-out sequences are never trained on"));
  }
  kd::HeldOutOptions held;
  held.count = eval_samples;
  return kd::SplitTrainHeldOut(n, held);
}

std::vector<std::pair<std::string, at::Tensor>> TrainableParameters(model::Qwen3ModelImpl& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

TrainPaths::TrainPaths(const std::string& output_dir)
    : resume((fs::path(output_dir) / "resume").string()),
      best((fs::path(output_dir) / "best").string()),
      log_csv((fs::path(output_dir) / "training_log.csv").string()) {}

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(path, " is not valid JSON"));
  return j;
}

void LossWindow::Add(const LossValues& v) {
  sum.total += v.total;
  sum.kd += v.kd;
  sum.hard_top1 += v.hard_top1;
  sum.hard_full += v.hard_full;
  sum.local += v.local;
  sum.global += v.global;
  ++count;
}

LossValues LossWindow::Mean() const {
  LossValues m;
  if (count == 0) return m;
  const double c = static_cast<double>(count);
  m.total = sum.total / c;
  m.kd = sum.kd / c;
  m.hard_top1 = sum.hard_top1 / c;
  m.hard_full = sum.hard_full / c;
  m.local = sum.local / c;
  m.global = sum.global / c;
  return m;
}

absl::StatusOr<LossValues> RunMicroBatches(MicroStep& micro, kd::KdBatchStream& stream, int64_t grad_accum,
                                           AdamW& adam, DistGroup* dist) {
  LossValues values;
  const bool sharded = dist != nullptr && dist->distributed();
  QATD_RETURN_IF_ERROR(CatchTorch("training step", [&]() -> absl::Status {
    adam.ZeroGrad();
    at::Tensor sums;  // [4] float: total, kd, top1, full
    for (int64_t micro_batch = 0; micro_batch < grad_accum; ++micro_batch) {
      QATD_ASSIGN_OR_RETURN(kd::KdBatch batch, stream.Next());
      // Each term is a mean over the global batch's positions (every sequence has L - 1), so a
      // shard's mean weighs rows / global_rows and the ranks' sum is the global mean.
      const double share = sharded ? static_cast<double>(batch.rows()) / static_cast<double>(batch.global_rows) : 1.0;
      if (batch.rows() == 0) continue;  // an empty shard of a last partial batch
      QATD_ASSIGN_OR_RETURN(at::Tensor row, micro.Run(batch.input_ids, batch.topk_idx, batch.topk_logits,
                                                      share / static_cast<double>(grad_accum)));
      if (sharded) row = row * share;
      sums = sums.defined() ? sums + row : row;
    }
    if (sharded) {
      // Gradients summed over the ranks (each already weighted by its share), in buckets.
      std::vector<at::Tensor> grads;
      for (const auto& [name, p] : adam.params()) {
        if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
        grads.push_back(p.grad());
      }
      QATD_RETURN_IF_ERROR(dist->AllReduceSum(grads));
      at::Tensor reduced = sums.defined() ? sums.to(at::kFloat).cpu().contiguous() : at::zeros({4}, at::kFloat);
      QATD_RETURN_IF_ERROR(dist->AllReduce(reduced));
      sums = reduced;
    }
    at::Tensor mean = (sums / static_cast<double>(grad_accum)).to(at::kDouble).cpu();
    values.total = mean[0].item<double>();
    values.kd = mean[1].item<double>();
    values.hard_top1 = mean[2].item<double>();
    values.hard_full = mean[3].item<double>();
    values.global = values.total;
    return absl::OkStatus();
  }));
  return values;
}

absl::Status ApplyStep(AdamW& adam, double lr, double clip_grad_norm, const LossValues& values, int64_t step_number,
                       DistGroup* dist) {
  if (!std::isfinite(values.total)) {
    adam.ZeroGrad();
    return absl::FailedPreconditionError(
        absl::StrCat("training diverged: the loss is ", values.total, " at step ", step_number,
                     "; the step was not applied and the last good checkpoints (best/, resume/) are kept. Try a lower lr"));
  }
  return CatchTorch("optimizer step", [&]() -> absl::Status {
    if (clip_grad_norm > 0) {
      const double norm = adam.ClipGradNorm(clip_grad_norm).item<double>();
      if (!std::isfinite(norm)) {
        adam.ZeroGrad();
        return absl::FailedPreconditionError(absl::StrCat(
            "training diverged: the gradient norm is ", norm, " at step ", step_number,
            "; the step was not applied and the last good checkpoints (best/, resume/) are kept. Try a lower lr"));
      }
    }
    adam.Step(lr);
    if (adam.sharded()) {
      if (dist == nullptr) return absl::InternalError("a sharded optimizer needs its process group");
      QATD_RETURN_IF_ERROR(adam.BroadcastOwned(*dist));
    }
    adam.ZeroGrad();
    return absl::OkStatus();
  });
}

TrainLog::TrainLog(std::string path, std::string extra_columns)
    : path_(std::move(path)), extra_columns_(std::move(extra_columns)) {}

void TrainLog::Add(int64_t step, double train_loss, double eval_loss, double lr, double elapsed_sec, std::string extra) {
  auto cell = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  rows_.push_back({step, cell(train_loss), cell(eval_loss), lr, elapsed_sec, extra});
}

absl::Status TrainLog::Write() const {
  std::ostringstream out;
  out << "step,train_loss,eval_loss,lr,elapsed_sec";
  if (!extra_columns_.empty()) out << "," << extra_columns_;
  out << "\n";
  auto num = [](const nlohmann::json& v) { return v.is_null() ? std::string() : absl::StrFormat("%.6f", v.get<double>()); };
  for (const auto& r : rows_) {
    out << r[0].get<int64_t>() << "," << num(r[1]) << "," << num(r[2]) << "," << absl::StrFormat("%.3e", r[3].get<double>())
        << "," << absl::StrFormat("%.1f", r[4].get<double>());
    if (!extra_columns_.empty()) out << "," << r[5].get<std::string>();
    out << "\n";
  }
  return WriteFileAtomically(path_, out.str());
}

}  // namespace qatd::train

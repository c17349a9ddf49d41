#pragma once
// Pieces shared by the end-to-end and layer-by-layer trainers (core/train internal).

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/kd/cache_reader.h"
#include "core/model/qwen3_model.h"
#include "core/train/dist_group.h"
#include "core/train/losses.h"
#include "core/train/micro_step.h"
#include "core/train/optimizer.h"
#include "core/train/student.h"

namespace qatd::train {

// Selects the V2 layers' forward for training: the dense fp16-STE weight (default; see
// V2ForwardPath::kDenseSte) or the reference's factored per-rank STE forward.
void SelectV2Forward(Student& student, bool factored);

// Train / held-out split of a cache: the last `eval_samples` sequences are held out.
// INVALID_ARGUMENT when that leaves no training sequence.
absl::StatusOr<kd::KdSplits> HeldOutSplits(const kd::KdCacheReader& reader, int64_t eval_samples);

// (name, parameter) of every parameter that requires grad, in module order.
std::vector<std::pair<std::string, at::Tensor>> TrainableParameters(model::Qwen3ModelImpl& model);

struct TrainPaths {
  explicit TrainPaths(const std::string& output_dir);
  std::string resume, best, log_csv;
};

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path);

// Mean loss terms of one optimizer step (NaN when a term is not computed).
struct LossValues {
  double total = 0, kd = 0, hard_top1 = 0, hard_full = 0, local = 0, global = 0;
};

struct LossWindow {
  LossValues sum;
  int64_t count = 0;
  void Add(const LossValues& v);
  LossValues Mean() const;
};

// Zeroes the gradients, runs grad_accum micro-batches of the global KD loss through `micro`
// (micro_step.h; CUDA graphs when it can) and backpropagates each divided by grad_accum
// (gradients accumulate in the parameters). Returns the mean terms (0 for a term that is off).
// Data parallel (`dist` with more than one rank, the stream sharded over the ranks): each
// shard's loss is weighted by its share of the global batch, then the gradients and the loss
// terms are summed over the ranks (bucketed all-reduces after the last backward, outside any
// captured CUDA graph), so every rank holds the gradient of the global batch.
absl::StatusOr<LossValues> RunMicroBatches(MicroStep& micro, kd::KdBatchStream& stream, int64_t grad_accum,
                                           AdamW& adam, DistGroup* dist = nullptr);

// The divergence guard, clipping and the update: FAILED_PRECONDITION naming `step_number` when
// the loss or the gradient norm is not finite (nothing is applied then); else clips (when
// clip_grad_norm > 0), steps with `lr` and zeroes the gradients. A sharded (ZeRO-1) optimizer
// updates its own parameters and then hands each to every rank of `dist`.
absl::Status ApplyStep(AdamW& adam, double lr, double clip_grad_norm, const LossValues& values, int64_t step_number,
                       DistGroup* dist = nullptr);

// training_log.csv (seed columns step, train_loss, eval_loss, lr, elapsed_sec; empty cells for
// values not measured at that step), kept in memory, serialised into trainer_state.json for
// resume and rewritten atomically.
class TrainLog {
 public:
  explicit TrainLog(std::string path, std::string extra_columns = "");
  void Add(int64_t step, double train_loss, double eval_loss, double lr, double elapsed_sec, std::string extra = "");
  absl::Status Write() const;
  nlohmann::json ToJson() const { return rows_; }
  void FromJson(const nlohmann::json& j) { rows_ = j; }

 private:
  std::string path_;
  std::string extra_columns_;
  nlohmann::json rows_ = nlohmann::json::array();
};

}  // namespace qatd::train

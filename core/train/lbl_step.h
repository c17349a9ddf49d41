#pragma once
// One optimizer step of the layer-wise trainer (lbl_trainer.h; spec §7.4, §7.5, §8.1):
// which parameters train, the float MLP target of L_local, the micro-batch loop and the
// keep-best snapshot of a layer. core/train internal.

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/kd/cache_reader.h"
#include "core/model/safetensors.h"
#include "core/quant/tensor_io.h"
#include "core/train/lbl_options.h"
#include "core/train/loss_values.h"
#include "core/train/losses.h"
#include "core/train/optimizer.h"
#include "core/train/dist_group.h"
#include "core/train/student.h"

namespace qatd::train {

// The original float MLP of one decoder layer: gate/up [I, H], down [H, I], fp32 on the model's
// device, holding the base model's weights rounded to the model dtype (what the student's dense
// layer held before quantization).
struct FloatMlp {
  at::Tensor gate, up, down;
};

// The float MLP of `layer` from the base checkpoint, cast to `dtype` then to fp32 on `device`.
absl::StatusOr<FloatMlp> LoadFloatMlp(const model::Checkpoint& base, int64_t layer, at::ScalarType dtype,
                                      at::Device device);

// Freezes everything, applies the trainable set to every quantized layer, then freezes again
// whatever is not under "model.layers.<layer>." (spec §8.1 step 1).
absl::Status MakeLayerTrainable(Student& s, int64_t layer, const LblOptions& o);

// What one layer's micro-batches need.
struct LblMicroContext {
  Student& s;
  const LblOptions& o;
  const KdLossWeights& weights;
  int64_t layer;
  const FloatMlp* fp;  // null when local_weight == 0
};

// One optimizer step's worth of micro-batches (gradients accumulate); returns the mean terms.
// `first_micro` numbers the micro-batches of the whole run: micro-batch n samples its L_local
// rows from a CPU generator seeded with MixSeed(seed ^ salt, n), so the sampling needs no saved
// generator state to resume exactly and does not depend on the device.
// Data parallel (`dist` with more than one rank; the stream yields this rank's shard of each
// global batch): every term is weighted by the shard's share of the global batch's rows, and
// the gradients and the terms are summed over the ranks, so the KD terms and their gradients
// are the global batch's. L_local is computed on the rank's own rows (up to local_tokens drawn
// from them; its normalisation by mean(y_fp^2) is over those rows), so with local_weight > 0
// the step is not the one-process step.
absl::StatusOr<LossValues> RunLblMicroBatches(const LblMicroContext& c, kd::KdBatchStream& stream, AdamW& adam,
                                              int64_t first_micro, DistGroup* dist = nullptr);

// A detached copy of `params` (the keep-best snapshot at a layer's start).
quant::TensorMap Snapshot(const std::vector<std::pair<std::string, at::Tensor>>& params);

// Copies the snapshot back into `params`; DATA_LOSS when it lacks one or a shape differs.
absl::Status Restore(const std::vector<std::pair<std::string, at::Tensor>>& params, const quant::TensorMap& snap);

}  // namespace qatd::train

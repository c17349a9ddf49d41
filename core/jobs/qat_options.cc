#include "core/jobs/qat_options.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/jobs/trainer_fields.h"

namespace qatd::jobs {

absl::StatusOr<QatOptions> QatOptions::FromProto(const v1::QatSpec& s, const v1::WorkerTask* task) {
  QatOptions o = ForVersion(s.version() == v1::QAT_VERSION_V2 ? QatVersion::kV2 : QatVersion::kV1);
  o.model = s.model();
  o.init_state = s.init_state();
  QATD_ASSIGN_OR_RETURN(o.quant, QuantFromProto(s.quant(), V1QuantDefaults()));
  if (o.version == QatVersion::kV2) {
    QATD_ASSIGN_OR_RETURN(o.quant_v2, QuantV2FromProto(s.quant_v2()));
  }
  switch (s.v2_init()) {
    case v1::V2_INIT_FROM_V2: o.v2_init = V2Init::kFromV2; break;
    case v1::V2_INIT_FROM_SCRATCH: o.v2_init = V2Init::kFromScratch; break;
    default: o.v2_init = V2Init::kFromV1;
  }
  o.v1_checkpoint = s.v1_checkpoint();
  o.v2_checkpoint = s.v2_checkpoint();
  o.dtype = DtypeFromProto(s.dtype());
  o.device = DeviceOf(task);
  o.snap_weights = s.snap_weights();
  o.snap_bake_scales = s.snap_bake_scales();
  o.skip_training = s.skip_training();
  o.train_lut = s.train_lut();

  train::E2eOptions& t = o.train;
  ApplyTrainerFields(s, t);
  t.train_weights = s.train_weights();
  t.train_scales = s.train_scales();
  t.train_g_only = s.train_g_only();
  t.train_mlp_only = s.train_mlp_only();
  t.kd_rand_neg = s.kd_rand_neg();
  t.output_dir = OutputDirOf(s.output_dir(), task);
  // A re-run after a daemon restart continues from the resume checkpoint.
  t.resume = IsRerun(task);
  return o;
}

absl::Status QatOptions::Validate() const {
  if (version != QatVersion::kV1 && version != QatVersion::kV2) {
    return absl::InvalidArgumentError(absl::StrCat("version must be V1 or V2, got ", static_cast<int>(version)));
  }
  if (model.empty()) return absl::InvalidArgumentError("model is required (a Hugging Face model directory)");
  if (train.output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  if (!skip_training && train.kd_cache_dir.empty()) {
    return absl::InvalidArgumentError("kd_cache_dir is required unless skip_training");
  }
  if (version == QatVersion::kV1) {
    if (!skip_training && !train.train_weights && !train.train_scales) {
      return absl::InvalidArgumentError("train_weights or train_scales is required unless skip_training (V1)");
    }
    if (train.train_g_only) return absl::InvalidArgumentError("train_g_only applies to V2 only");
    if (train_lut) {
      return absl::InvalidArgumentError("train_lut applies to V2 only (V1 trains weights and scales; its LUT is fixed)");
    }
    QATD_RETURN_IF_ERROR(quant.Validate());
  } else {
    if (train.train_weights) {
      return absl::InvalidArgumentError("train_weights: V2 trains scales (A, B, g) only; the indices are frozen");
    }
    if (snap_weights || snap_bake_scales) {
      return absl::InvalidArgumentError("snap_weights: V1 only; snap V2 checkpoints with a SNAP job");
    }
    if (v2_init == V2Init::kFromV1 && v1_checkpoint.empty()) {
      return absl::InvalidArgumentError("v1_checkpoint is required for V2 from V1");
    }
    if (v2_init == V2Init::kFromV2 && v2_checkpoint.empty()) {
      return absl::InvalidArgumentError("v2_checkpoint is required for V2 from V2");
    }
    QATD_RETURN_IF_ERROR(quant_v2.Validate());
  }
  if (snap_bake_scales && !snap_weights) return absl::InvalidArgumentError("snap_bake_scales needs snap_weights");
  QATD_RETURN_IF_ERROR(CheckDeviceName(device));
  if (skip_training) return absl::OkStatus();
  return TrainerOptions().Validate();
}

train::E2eOptions QatOptions::TrainerOptions() const {
  train::E2eOptions e = train;
  if (version == QatVersion::kV2 && !e.train_g_only) e.train_scales = true;
  e.eval_batch_size = std::min<int64_t>(e.eval_batch_size, std::max<int64_t>(1, e.batch_size));
  return e;
}

}  // namespace qatd::jobs

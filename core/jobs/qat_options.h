#pragma once
// The QAT job's options (seed train_anemll_qat.py / train_v2_simple.py, spec §9).
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to RunQat (core/jobs/qat_job.h).

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/jobs/options_common.h"
#include "core/quant/quant_config.h"
#include "core/train/e2e_options.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

enum class QatVersion { kV1 = 1, kV2 = 2 };
// Where a V2 student starts (spec §5): a V1 checkpoint converted, a V2 checkpoint (e.g. after
// CONVERT q4-to-q2), or an SVD initialisation of the base model.
enum class V2Init { kFromV1, kFromV2, kFromScratch };

struct QatOptions {
  QatVersion version = QatVersion::kV1;
  std::string model;               // required: HF model directory
  std::string init_state;          // V1: checkpoint to start from
  quant::QuantConfig quant = V1QuantDefaults();  // V1
  quant::QuantConfigV2 quant_v2;   // V2 (FromProto: preset Q2_A4 with attention quantized)
  V2Init v2_init = V2Init::kFromV1;
  std::string v1_checkpoint;       // V2 from V1
  std::string v2_checkpoint;       // V2 from V2
  Dtype dtype = Dtype::kAuto;      // auto: on CUDA V1 bf16, V2 fp32; fp32 on the CPU
  std::string device = "auto";
  bool snap_weights = false;       // V1: snap to the LUT after training
  bool snap_bake_scales = false;   // ... and bake the scales in
  bool skip_training = false;
  bool seed_files = true;          // write model_state_dict.pt / indices.pt / best_state_dict.pt
  // V2: also train each layer's LUT values (train::SetV2LutTrainable; the trainer trains them
  // with the scales, same lr). Refused for V1.
  bool train_lut = false;
  // The end-to-end trainer's settings (kd_cache_dir, output_dir, trainable set, schedule,
  // evaluation, resume) with the seed's defaults of `version` (ForVersion). V2 always trains
  // its scales (A, B, g) unless train_g_only.
  train::E2eOptions train = TrainDefaults(QatVersion::kV1);

  // train_anemll_qat.py's V1 quantization: group_size 32 (QuantConfig's own default is 128).
  static quant::QuantConfig V1QuantDefaults() {
    quant::QuantConfig q;
    q.group_size = 32;
    return q;
  }
  // The seed's trainer defaults of each version (train_anemll_qat.py | train_v2_simple.py):
  // batch 32 | 8, lr 1e-5 | 5e-5, hard_top1_weight 0 | 0.2, hard_full_weight 5e-4 | 5e-5,
  // logging every 50 | 20 steps, evaluation every 200 | 100, cosine off | on, warmup 0 | 100;
  // 40 held-out sequences.
  static train::E2eOptions TrainDefaults(QatVersion version) {
    train::E2eOptions t;
    t.eval_samples = 40;
    if (version == QatVersion::kV2) {
      t.batch_size = 8;
      t.lr = 5e-5;
      t.hard_top1_weight = 0.2;
      t.hard_full_weight = 5e-5;
      t.logging_steps = 20;
      t.eval_steps = 100;
      t.cosine = true;
      t.warmup_steps = 100;
    }
    return t;
  }
  // A job of `version` with that version's defaults.
  static QatOptions ForVersion(QatVersion version) {
    QatOptions o;
    o.version = version;
    o.train = TrainDefaults(version);
    return o;
  }

  // The spec's fields over the defaults of its version. `task` (null at submit time) places
  // the job: device, output directory, resume on a re-run. Daemon jobs keep a resume
  // checkpoint every 50 steps unless the spec says otherwise.
  static absl::StatusOr<QatOptions> FromProto(const v1::QatSpec& spec, const v1::WorkerTask* task = nullptr);
  // INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
  // The trainer's options as RunQat uses them (the V2 trainable-set rule, the eval batch).
  train::E2eOptions TrainerOptions() const;
};

}  // namespace qatd::jobs

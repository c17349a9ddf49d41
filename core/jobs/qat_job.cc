#include "core/jobs/qat_job.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/jobs/snap_report.h"
#include "core/kd/cache_reader.h"
#include "core/quant/quantize_model.h"
#include "core/train/dist_group.h"
#include "core/train/e2e_trainer.h"
#include "core/train/evaluate.h"
#include "core/train/student.h"
#include "core/train/train_common.h"
#include "core/train/trainable.h"

namespace qatd::jobs {
namespace fs = std::filesystem;

namespace {

absl::StatusOr<train::Student> BuildStudent(const QatOptions& o) {
  train::StudentOptions so;
  so.model_dir = o.model;
  so.dtype = DtypeName(o.dtype);
  so.auto_dtype = o.version == QatVersion::kV1 ? "bf16" : "fp32";
  so.device = o.device;
  if (o.version == QatVersion::kV1) {
    so.version = 1;
    so.quant_v1 = o.quant;
    so.checkpoint = o.init_state;
    so.calibration_cache = o.train.kd_cache_dir;  // rounding gptq: calibrate on the training split
    so.calibration_held_out = o.train.eval_samples;
    return train::LoadStudent(so);
  }
  so.version = 2;
  so.quant_v2 = o.quant_v2;
  if (o.v2_init == V2Init::kFromScratch) return train::LoadStudent(so);
  if (o.v2_init == V2Init::kFromV2) {
    so.checkpoint = o.v2_checkpoint;
    return train::LoadStudent(so);
  }
  // V1 -> V2 (spec §5): load the V1 checkpoint with its own settings, convert, freeze.
  so.version = 1;
  so.quant_v1 = o.quant;
  so.checkpoint = o.v1_checkpoint;
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  if (s.version != 1) return absl::InvalidArgumentError(absl::StrCat("v1_checkpoint ", o.v1_checkpoint, " is not a V1 checkpoint"));
  QATD_RETURN_IF_ERROR(quant::ConvertAllV1ToV2(*s.registry, o.quant_v2));
  QATD_RETURN_IF_ERROR(quant::FreezeAllQ(*s.registry));
  s.registry->FreezeAllParameters();
  s.version = 2;
  s.quant_v2 = o.quant_v2;
  return s;
}

}  // namespace

absl::Status RunQat(const QatOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  const train::E2eOptions& t = o.train;
  reporter.Log(LogLevel::kInfo, absl::StrCat("loading the V", static_cast<int>(o.version), " student from ", o.model));
  QATD_ASSIGN_OR_RETURN(train::Student s, BuildStudent(o));
  if (!s.init.empty()) reporter.Log(LogLevel::kInfo, absl::StrCat("fresh student init: ", s.init.dump()));
  const train::ModelSize size = train::MeasureModelSize(s);
  reporter.Metric("model/dense_bytes", 0, static_cast<double>(size.dense_bytes));
  reporter.Metric("model/quantized_bytes", 0, static_cast<double>(size.quantized_bytes));
  reporter.Log(LogLevel::kInfo, absl::StrFormat("%d quantized layers; model size %.2f MB dense -> %.2f MB quantized",
                                                quant::QuantizedLayers(*s.registry).size(), size.dense_bytes / 1e6,
                                                size.quantized_bytes / 1e6));
  std::error_code ec;
  fs::create_directories(t.output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", t.output_dir, ": ", ec.message()));

  nlohmann::json result = nlohmann::json::object();
  const std::string final_dir = (fs::path(t.output_dir) / "final").string();
  if (!o.skip_training) {
    const train::E2eOptions e = o.TrainerOptions();
    if (o.train_lut) train::SetV2LutTrainable(s, true, e.train_mlp_only);
    QATD_ASSIGN_OR_RETURN(train::E2eResult r, train::TrainE2e(s, e, reporter, cancel));
    if (o.train_lut) train::SetV2LutTrainable(s, false);  // _Q from the trained LUTs, sorted
    if (e.dist != nullptr && !e.dist->primary()) return absl::OkStatus();  // rank 0 writes the outputs
    reporter.Metric("eval/kd_initial", r.steps, r.initial.kd);
    reporter.Metric("eval/kd_best", r.steps, r.best.kd);
    reporter.Metric("train/tokens_per_second", r.steps, r.tokens_per_second);
    result = {{"initial_eval_kd", r.initial.kd}, {"best_eval_kd", r.best.kd},     {"best_step", r.best.step},
              {"last_eval_kd", r.last.kd},       {"steps", r.steps},              {"early_stopped", r.early_stopped},
              {"tokens_per_second", r.tokens_per_second}, {"best_top1", r.best.top1}, {"best_ppl", r.best.ppl}};
    if (o.seed_files) {
      QATD_RETURN_IF_ERROR(
          train::WriteStateDictPt(s, (fs::path(t.output_dir) / "best" / "best_state_dict.pt").string()));
    }
  }

  if (o.snap_weights) {
    const quant::SnapMode mode = o.snap_bake_scales ? quant::SnapMode::kBakeScales : quant::SnapMode::kLut;
    QATD_ASSIGN_OR_RETURN(auto stats, quant::SnapAllV1(*s.registry, mode));
    double err = 0, changed = 0;
    for (const auto& st : stats) {
      err += st.rel_error;
      changed += st.indices_changed;
    }
    const double n = std::max<size_t>(1, stats.size());
    s.snapped_mode = o.snap_bake_scales ? "baked" : "lut";
    reporter.Metric("snap/relative_error", 0, err / n);
    ReportLutUsage(reporter, stats);
    reporter.Log(LogLevel::kInfo, absl::StrFormat("snapped %d layers (%s): mean relative error %.3g, indices changed %.3g%%",
                                                  stats.size(), s.snapped_mode, err / n, 100 * changed / n));
    result["snapped_mode"] = s.snapped_mode;
  }
  if (!t.kd_cache_dir.empty()) {
    QATD_ASSIGN_OR_RETURN(auto reader, kd::KdCacheReader::Open(t.kd_cache_dir, {.model_vocab_size = s.config.vocab_size}));
    QATD_ASSIGN_OR_RETURN(kd::KdSplits splits, train::HeldOutSplits(*reader, t.eval_samples));
    train::EvalOptions eo;
    eo.temperature = t.temperature;
    eo.max_sequences = 0;
    QATD_ASSIGN_OR_RETURN(train::EvalResult ev, train::Evaluate(*s.model, *reader, splits.held_out, eo));
    if (o.skip_training) reporter.Metric("eval/kd_initial", 0, ev.kd);
    reporter.Metric("eval/kd_final", 0, ev.kd);
    reporter.Metric("eval/top1_final", 0, ev.top1);
    reporter.Metric("eval/ppl_final", 0, ev.ppl);
    result["final_eval_kd"] = ev.kd;
    result["final_top1"] = ev.top1;
    result["final_ppl"] = ev.ppl;
  }
  nlohmann::json job = {{"kind", "qat"},
                        {"train_weights", t.train_weights},
                        {"train_scales", t.train_scales},
                        {"train_lut", o.train_lut},
                        {"max_steps", t.max_steps},
                        {"lr", t.lr},
                        {"kd_cache_dir", t.kd_cache_dir}};
  QATD_RETURN_IF_ERROR(train::SaveStudent(s, final_dir,
                                          {{"job", job}, {"result", result}, {"train_weights", t.train_weights},
                                           {"train_scales", t.train_scales}, {"max_steps", t.max_steps}, {"lr", t.lr},
                                           {"snap_bake_scales", o.snap_bake_scales}},
                                          o.seed_files));
  reporter.Artifact(final_dir, "checkpoint");
  reporter.Log(LogLevel::kInfo, absl::StrCat("checkpoint written to ", final_dir));
  return absl::OkStatus();
}

}  // namespace qatd::jobs

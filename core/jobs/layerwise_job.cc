#include "core/jobs/layerwise_job.h"


#include <cmath>
#include <filesystem>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/train/dist_group.h"
#include "core/train/lbl_trainer.h"
#include "core/train/student.h"

namespace qatd::jobs {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// quant_config.json as train_anemll_lbl.py --save-quantized-dir writes it (spec §8.3):
// {mlp: {lut_size, group_size, scale_rank, learnable_lut, lut_include_zero}, attn: {...} | null}.
json SeedQuantConfigJson(const train::Student& s) {
  auto v1 = [](const quant::LayerQuantSpec& l) {
    return json{{"lut_size", l.lut_size},
                {"group_size", l.group_size},
                {"scale_rank", l.scale_rank},
                {"learnable_lut", false},
                {"lut_include_zero", l.lut_include_zero}};
  };
  auto v2 = [](const quant::LayerQuantSpecV2& l) {
    return json{{"lut_size", l.lut_size},
                {"group_size", l.group_size},
                {"scale_rank", l.scale_rank},
                {"learnable_lut", false},
                {"lut_include_zero", l.lut_include_zero}};
  };
  if (s.version == 2) {
    return {{"mlp", v2(s.quant_v2.ForKind(quant::LinearKind::kMlp))},
            {"attn", s.quant_v2.quantize_attn ? v2(s.quant_v2.ForKind(quant::LinearKind::kAttention)) : json()}};
  }
  return {{"mlp", v1(s.quant_v1.ForKind(quant::LinearKind::kMlp))},
          {"attn", s.quant_v1.quantize_attn ? v1(s.quant_v1.ForKind(quant::LinearKind::kAttention)) : json()}};
}

}  // namespace



absl::Status RunLayerwise(const LayerwiseOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  train::StudentOptions so;
  so.model_dir = o.model;
  so.dtype = DtypeName(o.dtype);
  so.auto_dtype = "bf16";
  so.device = o.device;  // LoadStudent resolves "auto" (train::ResolveDevice)
  so.checkpoint = o.init_state;
  so.version = 1;
  so.quant_v1 = o.quant;
  so.calibration_cache = o.kd_cache_dir;  // rounding gptq: calibrate on the training split
  so.calibration_held_out = o.eval_samples;
  reporter.Log(LogLevel::kInfo, absl::StrCat("loading the student from ", o.model,
                                             o.init_state.empty() ? "" : absl::StrCat(" + ", o.init_state), " on ",
                                             so.device));
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  if (!s.init.empty()) reporter.Log(LogLevel::kInfo, absl::StrCat("fresh student init: ", s.init.dump()));
  QATD_ASSIGN_OR_RETURN(train::LblResult r, train::TrainLayerwise(s, o.ToTrainerOptions(), reporter, cancel));
  // Data parallel: the ranks end with equal weights; rank 0 writes them.
  if (o.dist != nullptr && !o.dist->primary()) return absl::OkStatus();

  const json extra = {{"job", "layerwise"},
                      {"result", train::ToJson(r)},
                      {"train_scales", o.train_scales},
                      {"train_weights", o.train_weights},
                      {"train_mlp_only", o.train_mlp_only},
                      {"lr", o.lr},
                      {"init_state", o.init_state}};
  // The final checkpoint replaces output_dir atomically: the trainer's files move along.
  // resume/ is renamed (not copied) right before the swap; a crash in that window leaves a
  // complete old output_dir or the new one, but may drop resume/ (a re-run then starts over).
  QATD_RETURN_IF_ERROR(train::SaveStudent(s, o.output_dir, extra, /*seed_files=*/true,
                                          [&](const std::string& tmp) -> absl::Status {
                                            QATD_RETURN_IF_ERROR(WriteFileAtomically(
                                                (fs::path(tmp) / "quant_config.json").string(),
                                                SeedQuantConfigJson(s).dump(2) + "\n"));
                                            std::error_code ec;
                                            const fs::path log = fs::path(o.output_dir) / "training_log.csv";
                                            if (fs::is_regular_file(log, ec)) {
                                              fs::copy_file(log, fs::path(tmp) / "training_log.csv",
                                                            fs::copy_options::overwrite_existing, ec);
                                              if (ec) {
                                                return absl::InternalError(
                                                    absl::StrCat("cannot copy ", log.string(), ": ", ec.message()));
                                              }
                                            }
                                            const fs::path resume = fs::path(o.output_dir) / "resume";
                                            if (fs::is_directory(resume, ec)) {
                                              fs::rename(resume, fs::path(tmp) / "resume", ec);
                                              if (ec) {
                                                return absl::InternalError(
                                                    absl::StrCat("cannot move ", resume.string(), ": ", ec.message()));
                                              }
                                            }
                                            return absl::OkStatus();
                                          }));
  reporter.Artifact(o.output_dir, "checkpoint");
  reporter.Metric("eval/kd_initial", 0, r.initial_kd);
  reporter.Metric("eval/top1_initial", 0, r.initial_top1);
  reporter.Metric("eval/kd_final", r.steps, r.final_kd);
  reporter.Metric("eval/top1_final", r.steps, r.final_top1);
  reporter.Log(LogLevel::kInfo, absl::StrFormat("layerwise done: held-out kd %.4g -> %.4g; checkpoint %s", r.initial_kd,
                                                r.final_kd, o.output_dir));
  return absl::OkStatus();
}

}  // namespace qatd::jobs

#include "core/jobs/lora_job.h"

#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/jobs/export_job.h"
#include "core/quant/quantize_model.h"
#include "core/train/dist_group.h"
#include "core/train/e2e_trainer.h"
#include "core/train/lora.h"
#include "core/train/peft_adapter.h"
#include "core/train/student.h"

namespace qatd::jobs {
namespace fs = std::filesystem;
namespace {

// FNV-1a over every quantized tensor's bytes (name, dtype, shape, data): the job proves the
// quantized layers were not written without keeping a second copy of them.
uint64_t QuantStateDigest(quant::LinearRegistry& registry) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  };
  for (const auto& [name, t] : quant::QuantState(registry)) {
    mix(name.data(), name.size());
    const std::string type = std::string(c10::toString(t.scalar_type()));
    mix(type.data(), type.size());
    for (int64_t d : t.sizes()) mix(&d, sizeof(d));
    const at::Tensor c = t.detach().to(at::kCPU).contiguous();
    mix(c.data_ptr(), c.nbytes());
  }
  return h;
}

nlohmann::json EvalJson(const train::EvalPoint& p) {
  return {{"step", p.step}, {"kd", p.kd}, {"top1", p.top1}, {"ppl", p.ppl}};
}

}  // namespace

absl::Status RunLora(const LoraJobOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  if (!train::IsQatdCheckpoint(o.checkpoint)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", o.checkpoint, " is not a qatd checkpoint (a directory with qatd's config.json)"));
  }
  train::StudentOptions so;
  so.model_dir = o.model;
  so.checkpoint = o.checkpoint;
  so.dtype = DtypeName(o.dtype);
  so.auto_dtype = "bf16";
  so.device = o.device;
  reporter.Log(LogLevel::kInfo, absl::StrCat("loading ", o.checkpoint, " over ", o.model));
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  const size_t quantized = quant::QuantizedLayers(*s.registry).size();
  if (s.snapped_mode.empty()) {
    reporter.Log(LogLevel::kWarning, absl::StrCat(o.checkpoint, " is not snapped: the adapters are trained over its "
                                                                "fake-quant forward, which stays frozen"));
  }
  uint64_t digest_before = 0;
  QATD_RETURN_IF_ERROR(CatchTorch("lora: digest", [&] {
    digest_before = QuantStateDigest(*s.registry);
    return absl::OkStatus();
  }));

  QATD_ASSIGN_OR_RETURN(std::unique_ptr<train::LoraAdapters> adapters, train::LoraAdapters::Attach(s, o.lora));
  int64_t parameters = 0;
  for (const auto& [name, p] : adapters->Parameters()) parameters += p.numel();
  reporter.Metric("lora/parameters", 0, static_cast<double>(parameters));
  reporter.Log(LogLevel::kInfo,
               absl::StrFormat("V%d checkpoint (%d quantized layers%s); LoRA r %d, alpha %g, dropout %g on %d projections "
                               "(%s adapters): %d trainable parameters",
                               s.version, quantized, s.snapped_mode.empty() ? "" : ", snapped " + s.snapped_mode,
                               o.lora.rank, o.lora.alpha, o.lora.dropout, adapters->modules().size(), o.lora.dtype,
                               parameters));

  train::E2eOptions t = o.train;
  t.external = adapters.get();
  t.dist = o.dist;
  QATD_ASSIGN_OR_RETURN(train::E2eResult r, train::TrainE2e(s, t, reporter, cancel));
  if (t.dist != nullptr && !t.dist->primary()) return absl::OkStatus();  // rank 0 writes the outputs
  reporter.Metric("eval/kd_initial", r.steps, r.initial.kd);
  reporter.Metric("eval/kd_best", r.steps, r.best.kd);
  reporter.Metric("eval/top1_best", r.steps, r.best.top1);
  reporter.Metric("eval/ppl_best", r.steps, r.best.ppl);
  nlohmann::json result = {{"initial", EvalJson(r.initial)},
                           {"best", EvalJson(r.best)},
                           {"last", EvalJson(r.last)},
                           {"steps", r.steps},
                           {"early_stopped", r.early_stopped},
                           {"tokens_per_second", r.tokens_per_second},
                           {"parameters", parameters}};
  const nlohmann::json provenance = {{"checkpoint", o.checkpoint}, {"snapped_mode", s.snapped_mode},
                                     {"version", s.version},       {"result", result}};

  const std::string adapter_dir = (fs::path(t.output_dir) / "adapter").string();
  QATD_RETURN_IF_ERROR(train::WritePeftAdapter(*adapters, adapter_dir, o.model, provenance));
  reporter.Artifact(adapter_dir, "adapter");
  reporter.Log(LogLevel::kInfo, absl::StrFormat("held-out kd: snapped %.4g -> with adapters %.4g (step %d); adapters in %s",
                                                r.initial.kd, r.best.kd, r.best.step, adapter_dir));
  if (o.write_merged) {
    if (cancel.cancelled()) return absl::CancelledError("cancelled before the merged export");
    HfFolderOptions fo;
    fo.base_model_dir = o.model;
    fo.dtype = o.merged_dtype == Dtype::kFp16 ? at::kHalf : at::kBFloat16;
    fo.provenance = {{"lora", provenance}, {"adapter", adapter_dir}};
    const std::string merged_dir = (fs::path(t.output_dir) / "merged").string();
    QATD_ASSIGN_OR_RETURN(HfFolderSummary summary, WriteHfFolder(s.model, merged_dir, fo, &reporter, &cancel));
    reporter.Artifact(merged_dir, "merged");
    reporter.Log(LogLevel::kInfo, absl::StrFormat("merged %s export: %d tensors (%d materialised) in %s",
                                                  DtypeName(o.merged_dtype), summary.tensors, summary.materialised,
                                                  merged_dir));
    // The export reported its tensors as progress: the job's progress is its steps again.
    reporter.Progress(r.steps, t.max_steps, "steps", 0, 0);
  }

  QATD_RETURN_IF_ERROR(adapters->Detach());
  uint64_t digest_after = 0;
  QATD_RETURN_IF_ERROR(CatchTorch("lora: digest", [&] {
    digest_after = QuantStateDigest(*s.registry);
    return absl::OkStatus();
  }));
  if (digest_after != digest_before) {
    return absl::InternalError("the checkpoint's quantized tensors changed during LoRA training (they must stay frozen)");
  }
  result["quantized_tensors_unchanged"] = true;
  QATD_RETURN_IF_ERROR(WriteFileAtomically((fs::path(t.output_dir) / "lora_result.json").string(),
                                           nlohmann::json{{"job", "lora"}, {"lora", provenance}, {"result", result}}.dump(2) +
                                               "\n"));
  return absl::OkStatus();
}

}  // namespace qatd::jobs

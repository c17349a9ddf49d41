#include "core/jobs/model_jobs.h"

#include <torch/cuda.h>

#include <chrono>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/jobs/snap_report.h"
#include "core/infer/generate.h"
#include "core/kd/cache_reader.h"
#include "core/model/chat_template.h"
#include "core/model/tokenizer.h"
#include "core/quant/export.h"
#include "core/quant/lut_fit.h"
#include "core/quant/quant_linear_v2.h"
#include "core/quant/quantize_model.h"
#include "core/train/evaluate.h"
#include "core/train/gptq_init.h"
#include "core/train/held_out.h"
#include "core/train/lora.h"
#include "core/train/peft_adapter.h"
#include "core/train/seed_state.h"
#include "core/train/student.h"
#include "core/train/train_common.h"

namespace qatd::jobs {
namespace fs = std::filesystem;
namespace {

// bf16 on a GPU, fp32 on the CPU (the inference scripts' choice).
std::string AutoDtypeFor(const std::string& device) {
  auto d = train::ResolveDevice(device);
  return d.ok() && d->is_cuda() ? "bf16" : "fp32";
}

// V2 settings matching a V1 config (same LUT sizes and ranks), with the V2 script values.
quant::QuantConfigV2 V2Like(const quant::QuantConfig& v1) {
  quant::QuantConfigV2 v2 = *quant::QuantConfigV2::FromPreset("Q4_A4");
  v2.lut_size = v1.lut_size;
  v2.group_size = v1.group_size;
  v2.scale_rank = v1.scale_rank;
  v2.lut_include_zero = v1.lut_include_zero;
  v2.quantize_attn = v1.quantize_attn;
  v2.attn_lut_size = v1.attn_lut_size;
  v2.attn_group_size = v1.attn_group_size;
  v2.attn_scale_rank = v1.attn_scale_rank;
  v2.quantize_lm_head = v1.quantize_lm_head;
  return v2;
}

absl::StatusOr<train::EvalResult> EvalHeldOut(train::Student& s, const std::string& cache, int64_t eval_samples,
                                              double temperature, int64_t batch_size,
                                              train::DistGroup* dist = nullptr) {
  QATD_ASSIGN_OR_RETURN(auto reader, kd::KdCacheReader::Open(cache, {.model_vocab_size = s.config.vocab_size}));
  QATD_ASSIGN_OR_RETURN(kd::KdSplits splits, train::HeldOutSplits(*reader, eval_samples));
  train::EvalOptions eo;
  eo.max_sequences = 0;
  eo.temperature = temperature;
  eo.batch_size = batch_size;
  return train::EvaluateSharded(*s.model, *reader, splits.held_out, eo, dist);
}

void ReportEval(Reporter& reporter, const std::string& suffix, const train::EvalResult& r) {
  reporter.Metric("eval/kd" + suffix, 0, r.kd);
  reporter.Metric("eval/top1" + suffix, 0, r.top1);
  reporter.Metric("eval/ppl" + suffix, 0, r.ppl);
}

void LogSnapStats(Reporter& reporter, const std::vector<quant::SnapStats>& stats, const std::string& what) {
  double err = 0, gap = 0, changed = 0;
  for (const auto& st : stats) {
    err += st.rel_error;
    gap += st.effective_change;
    changed += st.indices_changed;
  }
  const double n = std::max<size_t>(1, stats.size());
  reporter.Metric("snap/relative_error", 0, err / n);
  reporter.Metric("snap/gap", 0, gap / n);
  ReportLutUsage(reporter, stats);
  reporter.Log(LogLevel::kInfo, absl::StrFormat("%s: %d layers, mean relative error %.3g, snap gap %.3g, indices changed %.3g%%",
                                                what, stats.size(), err / n, gap / n, 100 * changed / n));
}

// Streams generated tokens as UTF-8 text (holding back an incomplete trailing sequence).
struct TextStreamer {
  const model::Tokenizer& tok;
  Reporter& reporter;
  std::vector<int32_t> ids;
  size_t sent = 0;
  std::string text;
  void Push(int32_t id) {
    ids.push_back(id);
    std::string all = tok.Decode(ids, /*skip_special_tokens=*/true);
    size_t end = all.size();
    if (end >= 3 && all.compare(end - 3, 3, "\xEF\xBF\xBD") == 0) end -= 3;
    if (end > sent) {
      reporter.Text(all.substr(sent, end - sent), id);
      sent = end;
    }
    text = all;
  }
};

struct GenerateResult {
  std::string text;
  int64_t tokens = 0;
  double tokens_per_second = 0;
};

absl::StatusOr<GenerateResult> GenerateText(train::Student& s, const model::Tokenizer& tok, const std::string& prompt,
                                            const std::string& system_prompt, bool chat, bool thinking,
                                            infer::GenerationOptions go, Reporter* stream, CancelToken& cancel) {
  std::string text = prompt;
  if (chat) {
    std::vector<model::ChatMessage> messages;
    if (!system_prompt.empty()) messages.push_back({"system", system_prompt, std::nullopt});
    messages.push_back({"user", prompt, std::nullopt});
    model::ChatOptions co;
    co.add_generation_prompt = true;
    co.enable_thinking = thinking;
    QATD_ASSIGN_OR_RETURN(text, model::RenderChat(messages, co));
  }
  std::vector<int32_t> ids = tok.Encode(text);
  if (ids.empty()) return absl::InvalidArgumentError("prompt: it has no tokens");
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"}) {
    if (auto id = tok.TokenToId(stop)) go.stop_token_ids.push_back(*id);
  }
  if (s.config.eos_token_id >= 0) go.stop_token_ids.push_back(static_cast<int32_t>(s.config.eos_token_id));
  QATD_RETURN_IF_ERROR(go.Validate());
  class NullReporter : public Reporter {
   public:
    void Progress(int64_t, int64_t, const std::string&, double, double) override {}
    void Metric(const std::string&, int64_t, double) override {}
    void Log(LogLevel, const std::string&) override {}
    void Artifact(const std::string&, const std::string&) override {}
  } null_reporter;
  TextStreamer streamer{tok, stream != nullptr ? *stream : null_reporter};
  QATD_ASSIGN_OR_RETURN(auto result, infer::Generate(s.model, ids, go, [&](int32_t id) {
                          streamer.Push(id);
                          return !cancel.cancelled();
                        }));
  GenerateResult out;
  out.text = tok.Decode(result.ids, true);
  out.tokens = static_cast<int64_t>(result.ids.size());
  out.tokens_per_second = result.timings.decode_tokens_per_second;
  return out;
}

}  // namespace

// ---- CONVERT ------------------------------------------------------------------------------


namespace {

// lut_init kmeans: each LUT the conversion reduced (its size changed) is fitted to its layer's
// own W / S instead; the layer's indices are frozen again on the fitted LUT's nearest entries.
absl::Status FitReducedLuts(train::Student& s, const std::map<std::string, int64_t>& lut_before, Reporter& reporter) {
  int layers = 0;
  double mse_before = 0, mse_after = 0;
  for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
    auto v2 = std::dynamic_pointer_cast<quant::QuantLinearV2>(layer);
    auto it = lut_before.find(name);
    if (v2 == nullptr || it == lut_before.end() || it->second == v2->lut.numel()) continue;
    absl::StatusOr<quant::LutFit> fit = quant::FitLayerLutV2(*v2);
    if (!fit.ok()) return absl::Status(fit.status().code(), absl::StrCat(name, ": ", fit.status().message()));
    ++layers;
    mse_before += fit->mse_uniform;
    mse_after += fit->mse_fitted;
  }
  reporter.Log(LogLevel::kInfo,
               absl::StrFormat("lut_init kmeans: %d reduced LUTs fitted to their layers' W / S (S^2-weighted rounding "
                               "MSE summed over layers: uniform grid %.4g -> fitted %.4g)",
                               layers, mse_before, mse_after));
  return absl::OkStatus();
}

// rounding gptq: the Q2 indices of every V2 layer by GPTQ on the cache's training split.
absl::Status GptqRoundConverted(train::Student& s, const ConvertOptions& o, Reporter& reporter) {
  QATD_ASSIGN_OR_RETURN(auto reader, kd::KdCacheReader::Open(o.kd_cache_dir, {.model_vocab_size = s.config.vocab_size}));
  QATD_ASSIGN_OR_RETURN(kd::KdSplits splits, train::HeldOutSplits(*reader, o.eval_samples));
  train::GptqInitOptions g;
  g.sequences = o.calibration_sequences;
  QATD_ASSIGN_OR_RETURN(train::GptqInitReport r, train::GptqInitialize(*s.model, *s.registry, *reader, splits.train, g));
  const double changed = r.weights > 0 ? static_cast<double>(r.indices_changed) / static_cast<double>(r.weights) : 0.0;
  reporter.Log(LogLevel::kInfo,
               absl::StrFormat("rounding gptq: %d layers on %d calibration sequences (%d tokens): layer output error "
                               "%.4g (nearest) -> %.4g, %.1f%% of the indices changed, %d dead columns",
                               r.layers, r.sequence_ids.size(), r.tokens, r.error_nearest, r.error_gptq,
                               100.0 * changed, r.dead_columns));
  reporter.Metric("convert/gptq_error_nearest", 0, r.error_nearest);
  reporter.Metric("convert/gptq_error", 0, r.error_gptq);
  return absl::OkStatus();
}

}  // namespace

absl::Status RunConvert(const ConvertOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  train::StudentOptions so;
  so.model_dir = o.model;
  so.checkpoint = o.checkpoint;
  so.device = o.device;
  so.dtype = "fp32";  // both converters work in fp32 (spec §11 step 1)
  so.freeze_q = false;
  if (o.mode == ConvertMode::kV1ToV2) {
    so.version = 1;
    so.quant_v1 = o.source_quant;
  } else {
    so.version = 2;  // a seed .pt Q4 checkpoint is a V2 state_dict (spec §11)
    so.quant_v2 = *quant::QuantConfigV2::FromPreset("Q4_A4");
    so.quant_v2.scale_rank = o.q4_rank;
    so.quant_v2.quantize_attn = true;
  }
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  if (cancel.cancelled()) return absl::CancelledError("cancelled");
  auto eval = [&](const std::string& suffix) -> absl::Status {
    if (!o.eval) return absl::OkStatus();
    QATD_ASSIGN_OR_RETURN(train::EvalResult r, EvalHeldOut(s, o.kd_cache_dir, o.eval_samples, 2.0, 8));
    ReportEval(reporter, suffix, r);
    reporter.Log(LogLevel::kInfo, absl::StrFormat("held-out kd %s: %.4g (top-1 %.3f)", suffix, r.kd, r.top1));
    return absl::OkStatus();
  };
  QATD_RETURN_IF_ERROR(eval("_before"));
  if (s.version == 1) {
    // V1 -> V2 (spec §5); for q4_to_q2 this is the first half of the progressive path.
    const quant::QuantConfigV2 v2 = V2Like(s.quant_v1);
    QATD_RETURN_IF_ERROR(quant::ConvertAllV1ToV2(*s.registry, v2));
    s.version = 2;
    s.quant_v2 = v2;
    reporter.Log(LogLevel::kInfo, "converted V1 layers to V2 (g = |a||b|, spec §5)");
  } else if (o.mode == ConvertMode::kV1ToV2) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", o.checkpoint, " is already V2"));
  }
  if (o.mode == ConvertMode::kQ4ToQ2) {
    quant::QuantConfigV2 q2 = s.quant_v2;
    q2.lut_size = o.q2_mlp_lut_size;
    q2.scale_rank = o.q2_mlp_rank;
    q2.attn_lut_size = o.q2_attn_lut_size;
    q2.attn_scale_rank = o.q2_attn_rank;
    QATD_RETURN_IF_ERROR(q2.Validate());
    // k-means LUT reduction, rank expansion; indices are recomputed against the actual new
    // LUT by FreezeAllQ (true nearest entry, spec §17.5), not the uniform grid.
    std::map<std::string, int64_t> lut_before;
    for (const auto& [name, layer] : quant::QuantizedLayers(*s.registry)) {
      if (auto v2 = std::dynamic_pointer_cast<quant::QuantLinearV2>(layer)) lut_before[name] = v2->lut.numel();
    }
    QATD_RETURN_IF_ERROR(quant::ConvertAllLutAndRank(*s.registry, q2, o.seed));
    s.quant_v2 = q2;
    reporter.Log(LogLevel::kInfo, absl::StrFormat("Q4 -> Q2: MLP lut %d rank %d, attention lut %d rank %d", q2.lut_size,
                                                  q2.scale_rank, q2.attn_lut_size, q2.attn_scale_rank));
    if (o.fit_luts) QATD_RETURN_IF_ERROR(FitReducedLuts(s, lut_before, reporter));
  }
  QATD_RETURN_IF_ERROR(quant::FreezeAllQ(*s.registry));
  if (o.rounding == quant::Rounding::kGptq) QATD_RETURN_IF_ERROR(GptqRoundConverted(s, o, reporter));
  s.registry->FreezeAllParameters();
  QATD_RETURN_IF_ERROR(eval("_after"));
  const std::string final_dir = (fs::path(o.output_dir) / "final").string();
  QATD_RETURN_IF_ERROR(train::SaveStudent(
      s, final_dir, {{"job", {{"kind", "convert"}, {"mode", ConvertModeName(o.mode)}}}, {"converted_from", o.checkpoint}}, true));
  const train::ModelSize size = train::MeasureModelSize(s);
  reporter.Metric("model/quantized_bytes", 0, static_cast<double>(size.quantized_bytes));
  reporter.Artifact(final_dir, "checkpoint");
  return absl::OkStatus();
}

// ---- SNAP ---------------------------------------------------------------------------------


absl::Status RunSnap(const SnapOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  train::StudentOptions so;
  so.model_dir = o.model;
  so.checkpoint = o.checkpoint;
  so.device = o.device;
  so.dtype = AutoDtypeFor(o.device);
  so.version = 2;
  so.quant_v2 = *quant::QuantConfigV2::FromPreset("Q2_A4");
  so.quant_v2.quantize_attn = true;
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  if (s.version == 1) {
    QATD_ASSIGN_OR_RETURN(auto stats, quant::SnapAllV1(*s.registry, quant::SnapMode::kLut));
    LogSnapStats(reporter, stats, "V1 lut snap");
    s.snapped_mode = "lut";
  } else if (o.fp16) {
    QATD_ASSIGN_OR_RETURN(auto stats, quant::SnapAllV2ForAne(*s.registry));
    LogSnapStats(reporter, stats, "V2 fp16 (ANE) snap");
    s.snapped_mode = "ane_fp16";
  } else {
    QATD_ASSIGN_OR_RETURN(auto stats, quant::SnapAllV2ForExport(*s.registry));
    LogSnapStats(reporter, stats, "V2 export snap");
    s.snapped_mode = "v2_export";
  }
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  const std::string export_path = (fs::path(o.output_dir) / "quantized.safetensors").string();
  QATD_RETURN_IF_ERROR(quant::ExportQuantizedArtifact(export_path, quant::QuantizedLayers(*s.registry)));
  const std::string final_dir = (fs::path(o.output_dir) / "final").string();
  QATD_RETURN_IF_ERROR(train::SaveStudent(s, final_dir, {{"job", {{"kind", "snap"}, {"fp16", o.fp16}}}, {"checkpoint", o.checkpoint}},
                                          true));
  const train::ModelSize size = train::MeasureModelSize(s);
  reporter.Metric("model/dense_bytes", 0, static_cast<double>(size.dense_bytes));
  reporter.Metric("model/quantized_bytes", 0, static_cast<double>(size.quantized_bytes));
  reporter.Metric("model/export_bytes", 0, static_cast<double>(fs::file_size(export_path, ec)));
  reporter.Artifact(final_dir, "checkpoint");
  reporter.Artifact(export_path, "export");
  if (!o.test_generation) return absl::OkStatus();
  auto tok = model::Tokenizer::FromFile(o.tokenizer.empty() ? o.model : o.tokenizer);
  if (!tok.ok()) {
    reporter.Log(LogLevel::kWarning, absl::StrCat("generation test skipped: no tokenizer (", tok.status().message(), ")"));
    return absl::OkStatus();
  }
  infer::GenerationOptions go;
  go.max_new_tokens = o.max_new_tokens;
  for (const char* prompt : {"What is the capital of France?", "What is 2+2?", "Write a haiku about the sea.",
                             "Explain gravity in one sentence."}) {
    if (cancel.cancelled()) return absl::CancelledError("cancelled");
    QATD_ASSIGN_OR_RETURN(GenerateResult g, GenerateText(s, *tok, prompt, "You are a helpful assistant.", true, true, go,
                                                         nullptr, cancel));
    reporter.Log(LogLevel::kInfo, absl::StrCat("[generation test] ", prompt, " -> ", g.text));
  }
  return absl::OkStatus();
}

// The LoRA adapter folder `dir` applied to `s` (nullptr for ""): EVAL and GENERATE run the
// model with it (core/train/peft_adapter.h).
static absl::StatusOr<std::unique_ptr<train::LoraAdapters>> ApplyAdapter(train::Student& s, const std::string& dir,
                                                                  Reporter& reporter) {
  if (dir.empty()) return std::unique_ptr<train::LoraAdapters>();
  QATD_ASSIGN_OR_RETURN(std::unique_ptr<train::LoraAdapters> adapter, train::ApplyPeftAdapter(s, dir));
  reporter.Log(LogLevel::kInfo, absl::StrFormat("LoRA adapter %s applied: r %d, alpha %g on %d projections", dir,
                                                adapter->config().rank, adapter->config().alpha, adapter->modules().size()));
  return adapter;
}

// ---- EVAL ---------------------------------------------------------------------------------


absl::Status RunEval(const EvalJobOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  train::StudentOptions so;
  so.model_dir = o.model;
  so.checkpoint = o.checkpoint;
  so.quantize = !o.checkpoint.empty();
  so.device = o.device;
  so.dtype = o.dtype == Dtype::kAuto ? AutoDtypeFor(o.device) : DtypeName(o.dtype);
  // EvalSpec.version reaches the loader (issue #17 item 5). A seed .pt file is loaded as
  // these layers (the loader refuses a V2 state_dict as V1 and the reverse); a seed V2 file's
  // LUT sizes and ranks come from its tensors, the other V2 settings are the scripts' (Q2_A4
  // preset: no positivity, identity magnitudes). A qatd checkpoint's config.json decides.
  so.version = o.version == QatVersion::kV2 ? 2 : 1;
  if (so.version == 2 && !train::IsQatdCheckpoint(o.checkpoint)) {
    QATD_ASSIGN_OR_RETURN(const std::string file, train::SeedStateFilePath(o.checkpoint));
    QATD_ASSIGN_OR_RETURN(const quant::TensorMap seed, train::ReadSeedStateDict(file));
    QATD_RETURN_IF_ERROR(train::CheckSeedVersion(seed, 2, file));
    QATD_ASSIGN_OR_RETURN(so.quant_v2, train::SeedQuantConfigV2(seed, *quant::QuantConfigV2::FromPreset("Q2_A4")));
  }
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  if (so.version == 2 && s.version != 2) {
    return absl::InvalidArgumentError(absl::StrCat("version is V2, but checkpoint ", o.checkpoint, " holds V", s.version,
                                                   " layers (its config.json decides): evaluate it without --v2"));
  }
  if (cancel.cancelled()) return absl::CancelledError("cancelled");
  QATD_ASSIGN_OR_RETURN(std::unique_ptr<train::LoraAdapters> adapter, ApplyAdapter(s, o.adapter, reporter));
  if (!o.checkpoint.empty()) {
    reporter.Log(LogLevel::kInfo, absl::StrFormat("evaluating %s as V%d layers", o.checkpoint, s.version));
  }
  QATD_ASSIGN_OR_RETURN(train::EvalResult r, EvalHeldOut(s, o.kd_cache_dir, o.eval_samples, o.temperature, o.batch_size, o.dist));
  ReportEval(reporter, "", r);
  reporter.Log(LogLevel::kInfo, absl::StrFormat("%s on %d held-out sequences: kd %.4g, top-1 agreement %.3f, ppl %.2f",
                                                o.checkpoint.empty() ? "unquantized model" : o.checkpoint, r.sequences, r.kd,
                                                r.top1, r.ppl));
  return absl::OkStatus();
}

// ---- GENERATE -----------------------------------------------------------------------------


absl::Status RunGenerateJob(const GenerateJobOptions& o, Reporter& reporter, CancelToken& cancel) {
  QATD_RETURN_IF_ERROR(o.Validate());
  QATD_ASSIGN_OR_RETURN(model::Tokenizer tok, model::Tokenizer::FromFile(o.tokenizer.empty() ? o.model : o.tokenizer));
  train::StudentOptions so;
  so.model_dir = o.model;
  so.checkpoint = o.checkpoint;
  so.quantize = !o.checkpoint.empty();
  so.device = o.device;
  so.dtype = o.dtype == Dtype::kAuto ? AutoDtypeFor(o.device) : DtypeName(o.dtype);
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  QATD_ASSIGN_OR_RETURN(std::unique_ptr<train::LoraAdapters> adapter, ApplyAdapter(s, o.adapter, reporter));
  infer::GenerationOptions go;
  go.max_new_tokens = o.max_new_tokens;
  go.repetition_penalty = o.repetition_penalty;
  go.seed = o.seed;
  if (o.sample) {
    go.temperature = o.temperature;
    go.top_p = o.top_p;
  }
  QATD_ASSIGN_OR_RETURN(GenerateResult g, GenerateText(s, tok, o.prompt, o.system_prompt, o.chat_template, o.enable_thinking,
                                                       go, &reporter, cancel));
  if (cancel.cancelled()) return absl::CancelledError("cancelled during generation");
  reporter.Metric("generate/tokens", 0, static_cast<double>(g.tokens));
  reporter.Metric("generate/tokens_per_second", 0, g.tokens_per_second);
  return absl::OkStatus();
}

}  // namespace qatd::jobs

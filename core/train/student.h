#pragma once
// The quantized student every training, conversion, snap, eval and generate job works on, and
// its checkpoint directory (DESIGN.md §4):
//
//   <dir>/config.json        {"format": "qatd_checkpoint_v1", "version": 1|2, "base_model",
//                             "quant_config" (V1) / "quant_config_v2" (V2), "snapped_mode",
//                             plus the seed's keys (model_id, lut_size, group_size, scale_rank,
//                             attn_*, quantize_attn, snapped, lut_bits, attn_lut_bits, ...) and
//                             whatever the producing job adds ("job", "result")}
//   <dir>/model.safetensors  the state of every quantized layer ("<module>.<tensor>": latent
//                             weight, scales, LUT, V2 magnitudes, _Q/_indices, the persisted
//                             baked flag and V1 snapped mode). Unquantized parameters are frozen
//                             in every qatd job and come from the base model.
//
// Optional seed-compatible files (WriteSeedFiles): model_state_dict.pt (the full state_dict:
// every parameter and buffer under its Hugging Face name), indices.pt ({layer -> uint8 [O, I]},
// V1 layers only, right after a 'lut' snap too, spec §17.4), written in torch.save's format
// (model/torch_pt_writer.h) so Python's torch.load(f, weights_only=True) reads them as dicts
// of tensors; LoadStudent reads them and the files older qatd wrote with jit::pickle_save.
//
// A checkpoint directory is written atomically: into "<dir>.tmp-<pid>", then renamed over
// <dir> (an existing <dir> is replaced only after the new one is complete).

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/model/qwen3_config.h"
#include "core/model/qwen3_model.h"
#include "core/quant/linear_registry.h"
#include "core/quant/quant_config.h"

namespace qatd::train {

struct Student {
  model::Qwen3Config config;
  model::Qwen3Model model{nullptr};
  std::unique_ptr<quant::LinearRegistry> registry;
  int version = 1;                   // 1 = V1 layers, 2 = V2 layers
  quant::QuantConfig quant_v1;       // valid when version == 1
  quant::QuantConfigV2 quant_v2;     // valid when version == 2
  std::string base_model;            // the HF directory the student was built from
  std::string snapped_mode;          // "", "lut", "baked", "v2_export", "ane_fp16"
  nlohmann::json source = nlohmann::json::object();  // config.json of the checkpoint loaded, if any
  // What a fresh start's rounding did ({} for nearest or a loaded state): for gptq the
  // calibration ("sequences", "tokens") and the summed layer output errors before and after.
  nlohmann::json init = nlohmann::json::object();
};

// How to build a student.
struct StudentOptions {
  std::string model_dir;         // base HF model (required)
  std::string dtype = "auto";    // auto | bf16 | fp16 | fp32 ("auto" = auto_dtype on CUDA, fp32 on the CPU)
  std::string auto_dtype = "bf16";
  std::string device = "cpu";    // auto | cpu | cuda | cuda:N
  // A qatd checkpoint directory, or a seed file/directory (model_state_dict.pt,
  // best_state_dict.pt, or a directory holding one of them). "" = fresh quantization.
  // A qatd checkpoint's own config.json decides version and quantization settings.
  std::string checkpoint;
  // Used without a qatd checkpoint (fresh, or seed .pt files).
  int version = 1;
  quant::QuantConfig quant_v1;
  quant::QuantConfigV2 quant_v2;
  bool freeze_q = true;          // V2 fresh / seed init: freeze the indices (spec §9.3)
  // false: the dense base model (no quantized layers; `checkpoint` must be empty). For
  // evaluating or sampling the unquantized teacher.
  bool quantize = true;
  // Calibration data for quant_v1.rounding gptq on a fresh V1 start (gptq_init.h): the KD
  // cache, of which the last `calibration_held_out` sequences are held out and never read.
  // Required for rounding gptq without a checkpoint (FAILED_PRECONDITION otherwise).
  std::string calibration_cache;
  int64_t calibration_held_out = 0;
};

// "auto" (cuda:0 when CUDA is available, else cpu), "cpu", "cuda", "cuda:N".
// FAILED_PRECONDITION for cuda without CUDA, INVALID_ARGUMENT for anything else.
absl::StatusOr<at::Device> ResolveDevice(const std::string& name);

// Loads the base model, quantizes it (V1 or V2 per the checkpoint or the options) and loads
// the checkpoint's state. NOT_FOUND / INVALID_ARGUMENT naming the file or field; every model
// parameter is left frozen (apply a TrainableSet next).
absl::StatusOr<Student> LoadStudent(const StudentOptions& options);

// True when `path` is a qatd checkpoint directory (config.json with our format tag).
bool IsQatdCheckpoint(const std::string& path);

// The checkpoint's config.json as SaveStudent writes it (without `extra`).
nlohmann::json StudentConfigJson(const Student& student);

// Writes config.json (StudentConfigJson merged with `extra`) and model.safetensors into `dir`
// atomically; with seed_files also model_state_dict.pt and indices.pt. `add_files`, if set,
// writes more files into the temporary directory (its argument) before it becomes `dir`.
absl::Status SaveStudent(Student& student, const std::string& dir, const nlohmann::json& extra = {},
                         bool seed_files = false,
                         const std::function<absl::Status(const std::string& tmp_dir)>& add_files = nullptr);

// Writes the full state_dict (HF names, as CPU tensors) to `path` in torch.save's format.
absl::Status WriteStateDictPt(Student& student, const std::string& path);

// Model size in bytes: dense (every parameter at its stored dtype) and quantized (quantized
// layers counted as packed indices + fp16 LUT and scales; everything else as stored).
struct ModelSize {
  int64_t dense_bytes = 0;
  int64_t quantized_bytes = 0;
};
ModelSize MeasureModelSize(Student& student);

}  // namespace qatd::train

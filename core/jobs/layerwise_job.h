#pragma once
// The LAYERWISE job (DESIGN.md §1): layer-by-layer QAT of a V1 student from the KD cache
// (seed scripts/train_anemll_lbl.py --optimize-scales; the LBL weights stage of the notebook
// recipe with train_weights; spec §8).
//
// Steps: Validate -> LoadStudent (the base model quantized with `quant`, or `init_state`: a
// qatd checkpoint, whose own config decides the quantization, or the seed's .pt) ->
// core/train/lbl_trainer.h TrainLayerwise -> the result checkpoint.
//
// Output: output_dir itself is the result checkpoint (core/train/student.h layout: config.json
// with {"job": "layerwise", "result": {per-layer table, initial/final eval}}, model.safetensors,
// and the seed's model_state_dict.pt, indices.pt, plus quant_config.json as
// train_anemll_lbl.py --save-quantized-dir writes it, spec §8.3), registered as artifact
// "checkpoint". The trainer's resume/ and training_log.csv live in output_dir and are carried
// into the final directory (it replaces output_dir atomically). With resume = true a killed
// job continues from output_dir/resume.
//
// Metrics at the end: eval/kd_initial, eval/kd_final, eval/top1_initial, eval/top1_final
// (all eval_samples held-out sequences); during training the trainer's series.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/common/reporter.h"
#include "core/jobs/layerwise_options.h"
#include "core/quant/quant_config.h"

namespace qatd::jobs {


absl::Status RunLayerwise(const LayerwiseOptions& options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs

#pragma once
// The EXPORT job's options (issue #17): a qatd checkpoint as a model other tools read.
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to the job (core/jobs/export_job.h).

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/jobs/options_common.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

enum class ExportFormat {
  kHf,      // Hugging Face folder with materialised (dense) weights
  kAnemll,  // LUT-palettized layers for ANEMLL's Core ML tooling (core/jobs/export_anemll.h)
};
// "hf", "anemll".
const char* ExportFormatName(ExportFormat format);

struct ExportOptions {
  std::string model;                      // required: the base HF model directory
  std::string checkpoint;                 // required: a qatd checkpoint directory
  ExportFormat format = ExportFormat::kHf;
  // Of the written floating tensors: bf16 | fp16 | fp32. The spec's auto is bf16 for hf (what
  // Qwen3 checkpoints ship in) and fp16 for anemll (what the ANE computes in).
  Dtype dtype = Dtype::kBf16;
  int64_t max_shard_bytes = int64_t{2} << 30;  // hf: one safetensors file up to this size, else shards
  std::string device = "auto";            // where the weights are materialised
  std::string output_dir;                 // required; the folder is <output_dir>/hf or /anemll
  // The spec's fields over these defaults. `task` (null at submit time) places the job:
  // device and output directory.
  static absl::StatusOr<ExportOptions> FromProto(const v1::ExportSpec& spec, const v1::WorkerTask* task = nullptr);
  // INVALID_ARGUMENT naming the field: missing model/checkpoint/output_dir, dtype auto,
  // max_shard_bytes < 1.
  absl::Status Validate() const;
};

}  // namespace qatd::jobs

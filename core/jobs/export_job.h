#pragma once
// EXPORT (issue #17): a qatd checkpoint as a model other tools read.
//
// Format hf writes <output_dir>/hf/, a Hugging Face folder that transformers loads as a plain
// Qwen3ForCausalLM:
//   config.json            the base model's config.json, torch_dtype set to the export dtype
//                          (and any quantization_config dropped)
//   tokenizer files        copied from the base model when present (tokenizer.json,
//                          tokenizer_config.json, generation_config.json, vocab.json, ...)
//   model.safetensors      every parameter under its HF name; each quantized projection as
//                          its effective weight LUT[indices] ⊙ S (spec §2.2, §3.4, §4: what
//                          qatd's model computes with), the rest from the base model; above
//                          max_shard_bytes: model-0000N-of-0000M.safetensors +
//                          model.safetensors.index.json ({"metadata": {"total_size"},
//                          "weight_map"}) as save_pretrained writes them
//   qatd_export.json       provenance: checkpoint, base model, dtype, quantized layers, the
//                          SHA-256 of every tensor
// Streamed: one tensor is materialised, converted, written and freed at a time. The folder is
// written as "<dir>.tmp-<pid>", read back and checked (every tensor's name, dtype, shape and
// SHA-256; config.json parses), then renamed to <dir>: readers never see half a folder.
// It also writes <output_dir>/reference_logits.safetensors: input_ids I64 [1, S] and the
// quantized model's fp32 logits F32 [1, S, V] on a fixed token sequence, which
// scripts/gpu/check_hf_export.py compares with transformers' logits of the folder.
// Artifact: <output_dir>/hf, kind "export". Format anemll: core/jobs/export_anemll.h
// (<output_dir>/anemll, the same reference logits next to it).

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/common/reporter.h"
#include "core/jobs/export_options.h"
#include "core/model/qwen3_model.h"
#include "core/train/student.h"

namespace qatd::jobs {

struct HfFolderOptions {
  std::string base_model_dir;                  // config.json and tokenizer files come from here
  at::ScalarType dtype = at::kBFloat16;        // kBFloat16, kHalf or kFloat
  int64_t max_shard_bytes = int64_t{2} << 30;  // >= 1
  nlohmann::json provenance = nlohmann::json::object();  // merged into qatd_export.json
};

struct HfFolderSummary {
  int64_t tensors = 0;        // written
  int64_t materialised = 0;   // of them, quantized projections
  int64_t shards = 0;         // safetensors files
  uint64_t weight_bytes = 0;  // total_size: the tensors' bytes
};

// Writes `model` (dense or with quantized layers; any device and dtype) as the HF folder `dir`
// (see above; an existing `dir` is replaced once the new one is complete). `reporter`, if
// set, gets progress in tensors. Errors: INVALID_ARGUMENT (bad options), NOT_FOUND (no
// base config.json), DATA_LOSS when the read-back differs from what was written, file
// errors as the file seam's, CANCELLED.
absl::StatusOr<HfFolderSummary> WriteHfFolder(model::Qwen3Model& model, const std::string& dir,
                                              const HfFolderOptions& options, Reporter* reporter = nullptr,
                                              CancelToken* cancel = nullptr);

// The base model's config.json (`base_model_dir` or its config.json) as transformers reads it,
// with torch_dtype set to `dtype` and any quantization_config dropped. NOT_FOUND / INVALID_ARGUMENT.
absl::StatusOr<nlohmann::json> BaseHfConfig(const std::string& base_model_dir, at::ScalarType dtype);
// Copies the base model's tokenizer and generation files (tokenizer.json, tokenizer_config.json,
// generation_config.json, vocab.json, merges.txt, ... when present) into `dir`.
absl::Status CopyTokenizerFiles(const std::string& base_model_dir, const std::string& dir);

// The fixed token sequence of reference_logits.safetensors: `length` ids spread over the
// vocabulary (deterministic, no tokenizer needed).
std::vector<int64_t> ReferenceTokenIds(int64_t vocab_size, int64_t length = 16);

// Loads the checkpoint (fp32) and writes the folder of options.format (hf: <output_dir>/hf;
// anemll: <output_dir>/anemll, core/jobs/export_anemll.h) and reference_logits.safetensors.
// Artifact: the folder, kind "export".
absl::Status RunExport(const ExportOptions& options, Reporter& reporter, CancelToken& cancel);
// The format's folder for a loaded student; returns its path.
absl::StatusOr<std::string> ExportHf(const ExportOptions& options, train::Student& student, Reporter& reporter,
                                     CancelToken& cancel);

}  // namespace qatd::jobs

#pragma once
// EXPORT --format anemll (issue #17): a qatd checkpoint as LUT-palettized layers for ANEMLL's
// Core ML tooling. docs/export-anemll.md documents every file and field, and what is known
// (and not) about the consumer. <output_dir>/anemll/ holds:
//
//   quantized.safetensors   per quantized projection <layer> (HF module name):
//                             <layer>.indices  U8 [ceil(O*I*bits/8)]  LUT indices of the [O, I]
//                                              weight, packed (core/quant/export.h PackIndices:
//                                              row-major, low bits first; bits 2 / 4 / 8)
//                             <layer>.lut      [n]       the LUT values
//                             <layer>.scale_A  [O, r] and <layer>.scale_B [r, I]: the low-rank
//                                              scale factors (V1: A and B[:, :I]; V2: Â diag ĝ
//                                              and B̂, the magnitudes folded into A), or
//                             <layer>.scales   [O, I]    a V1 full-scale layer's scales
//                             <layer>.bias     [O]       when the projection has one
//   snapped.safetensors     <layer>.weight [O, I] = lut[indices]: the "snapped_mode lut" weight
//                           the AQ1 loaders of ANEMLL's anemll-quant-1 branch read (they derive
//                           the indices from it by nearest LUT value)
//   model.safetensors       every other parameter (embeddings, norms, unquantized linears) under
//                           its HF name
//   config.json             the base model's HF config (torch_dtype = the export dtype) plus the
//                           seed's quantization keys (snapped_mode "lut", lut_bits, scale_rank, ...)
//   tokenizer files         copied from the base model when present
//   anemll_manifest.json    format version, dtype, formulas, per layer (kind, shape, LUT size,
//                           bits, rank, scale formula), the dense tensors, and every other file
//                           with its size, SHA-256 and (safetensors) each tensor's SHA-256
// Effective weight: W = lut[indices] * S, S = clamp_min(scale_A @ scale_B, 1e-8) (V1) or
// scale_A @ scale_B (V2, unclamped, spec §4.4) or clamp_min(scales, 1e-8) (V1 full scales).
// Floating tensors are written in the export dtype (fp16 by default: what the ANE runs).
//
// Streamed: the three safetensors files are written side by side, one layer at a time (its
// indices, LUT, factors and snapped weight made, appended and freed before the next layer).
// The folder is written as "<dir>.tmp-<pid>", verified by VerifyAnemllFolder, then renamed.

#include <cstdint>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/common/reporter.h"
#include "core/jobs/export_options.h"
#include "core/train/student.h"

namespace qatd::jobs {

inline constexpr int kAnemllExportFormatVersion = 1;

struct AnemllFolderOptions {
  std::string base_model_dir;                            // config.json and tokenizer files
  at::ScalarType dtype = at::kHalf;                      // kHalf, kBFloat16 or kFloat
  nlohmann::json provenance = nlohmann::json::object();  // merged into anemll_manifest.json
};

struct AnemllFolderSummary {
  int64_t quantized_layers = 0;
  int64_t dense_tensors = 0;
  uint64_t bytes = 0;  // of all files but the manifest
};

// Writes `student` (with V1 or V2 quantized layers) as the folder `dir` (above; an existing
// `dir` is replaced once the new one is verified). Errors: INVALID_ARGUMENT (bad options, a
// student without quantized layers), NOT_FOUND (no base config.json), DATA_LOSS when the read
// back differs, file errors as the file seam's, CANCELLED.
absl::StatusOr<AnemllFolderSummary> WriteAnemllFolder(train::Student& student, const std::string& dir,
                                                      const AnemllFolderOptions& options, Reporter* reporter = nullptr,
                                                      CancelToken* cancel = nullptr);

// Re-reads a folder against its anemll_manifest.json: every listed file exists with its size
// and SHA-256; every safetensors tensor listed is there with its SHA-256; every layer has its
// tensors with the manifest's shapes, indices < lut size, and snapped weight == lut[indices]
// bit for bit. DATA_LOSS naming the file / tensor / layer; NOT_FOUND without a manifest.
absl::Status VerifyAnemllFolder(const std::string& dir);

// EXPORT's anemll step: writes <output_dir>/anemll for a loaded student (options.dtype; auto
// is fp16 already from ExportOptions::FromProto), logs and reports metrics; returns the folder.
absl::StatusOr<std::string> ExportAnemll(const ExportOptions& options, train::Student& student, Reporter& reporter,
                                         CancelToken& cancel);

}  // namespace qatd::jobs

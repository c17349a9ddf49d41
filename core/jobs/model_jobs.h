#pragma once
// The short, non-training jobs over a student checkpoint (DESIGN.md §1):
//   CONVERT   Q4 -> Q2 (spec §11) or V1 -> V2 (spec §5)       seed convert_q4_to_q2.py, convert_v1_to_v2.py
//   SNAP      V2 export / fp16 ANE snap (spec §10.2), V1 lut snap; packed export artifact
//   EVAL      held-out KD loss, top-1 agreement, perplexity    (spec §7.3, held-out per §17.12)
//   GENERATE  chat-template prompt -> streamed tokens          seed run_anemll_inference.py
// Checkpoints are core/train/student.h directories (the seed's .pt files are accepted as
// inputs where the seed takes them). Every job reports through the Reporter; CONVERT and SNAP
// write output_dir/final (artifact "checkpoint"), SNAP also output_dir/quantized.safetensors
// (artifact "export", core/quant/export.h).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/common/reporter.h"
#include "core/jobs/generate_options.h"
#include "core/jobs/eval_options.h"
#include "core/jobs/snap_options.h"
#include "core/jobs/convert_options.h"
#include "core/quant/quant_config.h"

namespace qatd::jobs {

absl::Status RunConvert(const ConvertOptions& options, Reporter& reporter, CancelToken& cancel);

absl::Status RunSnap(const SnapOptions& options, Reporter& reporter, CancelToken& cancel);

absl::Status RunEval(const EvalJobOptions& options, Reporter& reporter, CancelToken& cancel);

// Streams the decoded text through Reporter::Text; metrics generate/tokens,
// generate/tokens_per_second.
absl::Status RunGenerateJob(const GenerateJobOptions& options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs

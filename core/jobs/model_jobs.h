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
#include "core/jobs/reporter.h"
#include "core/quant/quant_config.h"

namespace qatd::jobs {

struct ConvertOptions {
  std::string mode = "q4_to_q2";  // q4_to_q2 | v1_to_v2
  std::string model;              // required: base HF model
  std::string checkpoint;         // required: V1 or V2 (Q4) checkpoint
  int q4_rank = 4;                // only for seed .pt inputs without a config (qatd checkpoints carry theirs)
  int q2_mlp_rank = 32;
  int q2_attn_rank = 8;
  int q2_mlp_lut_size = 4;
  int q2_attn_lut_size = 16;
  quant::QuantConfig source_quant;  // V1 settings of a seed .pt V1 checkpoint
  bool eval = false;              // --eval: held-out KD loss before and after (needs kd_cache_dir)
  std::string kd_cache_dir;
  int64_t eval_samples = 40;
  std::string device = "auto";
  uint64_t seed = 0;              // random init of the new rank components
  std::string output_dir;         // required
  absl::Status Validate() const;
};
absl::Status RunConvert(const ConvertOptions& options, Reporter& reporter, CancelToken& cancel);

struct SnapOptions {
  std::string model;              // required
  std::string checkpoint;         // required
  bool fp16 = false;              // --fp16 / --ane: the ANE snap (spec §10.2)
  bool test_generation = true;    // greedy generation on the seed's 4 prompts (needs a tokenizer)
  std::string tokenizer;          // default: the model directory
  int64_t max_new_tokens = 128;
  std::string device = "auto";
  std::string output_dir;         // required
  absl::Status Validate() const;
};
absl::Status RunSnap(const SnapOptions& options, Reporter& reporter, CancelToken& cancel);

struct EvalJobOptions {
  std::string model;              // required
  std::string checkpoint;         // "" = the unquantized model
  std::string kd_cache_dir;       // required
  int64_t eval_samples = 40;      // the cache's last sequences (never trained on by qatd)
  double temperature = 2.0;
  int64_t batch_size = 8;
  std::string dtype = "auto";     // auto = bf16 on GPU, fp32 on CPU
  std::string device = "auto";
  absl::Status Validate() const;
};
absl::Status RunEval(const EvalJobOptions& options, Reporter& reporter, CancelToken& cancel);

struct GenerateJobOptions {
  std::string model;              // required
  std::string checkpoint;         // "" = the unquantized model
  std::string tokenizer;          // default: model
  std::string prompt;             // required
  std::string system_prompt = "You are a helpful assistant.";  // "" = none
  bool chat_template = true;
  bool enable_thinking = true;
  int64_t max_new_tokens = 256;
  bool sample = false;
  double temperature = 0.6;
  double top_p = 0.9;
  double repetition_penalty = 1.1;
  std::string dtype = "auto";
  std::string device = "auto";
  uint64_t seed = 0;
  absl::Status Validate() const;
};
// Streams the decoded text through Reporter::Text; metrics generate/tokens,
// generate/tokens_per_second.
absl::Status RunGenerateJob(const GenerateJobOptions& options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs

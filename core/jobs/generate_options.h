#pragma once
// The GENERATE job's options (seed run_anemll_inference.py).
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to the job (core/jobs/*_job.h).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/jobs/options_common.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

struct GenerateJobOptions {
  std::string model;              // required
  std::string checkpoint;         // "" = the unquantized model
  std::string adapter;            // a LoRA adapter folder (PEFT layout, a LORA job's adapter/) applied on top; "" = none
  std::string tokenizer;          // default: model
  std::string prompt;             // required, except in a session (empty there)
  bool session = false;           // a chat session: user messages arrive while it runs
  std::string system_prompt = "You are a helpful assistant.";  // "" = none
  bool chat_template = true;
  bool enable_thinking = true;
  int64_t max_new_tokens = 256;
  bool sample = false;
  double temperature = 0.6;
  double top_p = 0.9;
  double repetition_penalty = 1.1;
  Dtype dtype = Dtype::kAuto;  // auto = bf16 on GPU, fp32 on CPU
  std::string device = "auto";
  uint64_t seed = 0;
  // The spec's fields over these defaults. `task` (null at submit time) places the job:
  // device, output directory, resume on a re-run.
  static absl::StatusOr<GenerateJobOptions> FromProto(const v1::GenerateSpec& spec, const v1::WorkerTask* task = nullptr);
  absl::Status Validate() const;
};

}  // namespace qatd::jobs

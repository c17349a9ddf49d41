#pragma once
// The `qat` subcommands that submit one job: each turns its flags into a JobSpec.
//
//   qat cache   -> KdCacheSpec     (seed: precompute_teacher_topk.py)
//   qat lbl     -> LayerwiseSpec   (train_anemll_lbl.py)
//   qat train   -> QatSpec         (train_anemll_qat.py; --v2: train_v2_simple.py)
//   qat convert -> ConvertSpec     (convert_q4_to_q2.py, convert_v1_to_v2.py)
//   qat snap    -> SnapSpec        (snap_and_test_v2.py)
//   qat eval    -> EvalSpec
//   qat infer   -> GenerateSpec    (run_anemll_inference.py / test_inference.py)
//   qat export  -> ExportSpec      (issue #17: a Hugging Face folder other tools read)
//   qat lora    -> LoraSpec        (issue #19: train_recovery_lora_multi.py)
//   qat probe   -> ProbeSpec       (hidden: a synthetic job for tests)
//
// Usage: Register() on a CLI11 (sub)command, parse, then Build(). Build() may be called more
// than once; each call starts from an empty spec.

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/spec_flags.h"
#include "qatd/v1/job.pb.h"

namespace qatd::client {

class SpecCommand {
 public:
  virtual ~SpecCommand() = default;

  // Adds the flags (and the help footer with an example) to `app`.
  void Register(CLI::App* app);
  // The spec from the parsed flags, or INVALID_ARGUMENT naming the flags for contradictions
  // that can be seen without the daemon (everything else is the daemon's to validate).
  absl::StatusOr<v1::JobSpec> Build();

 protected:
  // Selects the spec's kind (e.g. spec.mutable_qat()).
  virtual void Init(v1::JobSpec& spec) = 0;
  virtual void AddFlags(SpecFlags& flags) = 0;
  virtual std::string Example() const = 0;
  // Records a local usage error; Build() returns the first one.
  void Error(std::string message) { errors_.push_back(std::move(message)); }

  v1::JobSpec spec_;

 private:
  std::unique_ptr<SpecFlags> flags_;
  std::vector<std::string> errors_;
};

std::unique_ptr<SpecCommand> NewKdCacheCommand();
std::unique_ptr<SpecCommand> NewLayerwiseCommand();
std::unique_ptr<SpecCommand> NewQatCommand();
std::unique_ptr<SpecCommand> NewConvertCommand();
std::unique_ptr<SpecCommand> NewSnapCommand();
std::unique_ptr<SpecCommand> NewEvalCommand();
std::unique_ptr<SpecCommand> NewGenerateCommand();
std::unique_ptr<SpecCommand> NewProbeCommand();
std::unique_ptr<SpecCommand> NewExportCommand();
std::unique_ptr<SpecCommand> NewLoraCommand();

class Connection;
// `qat export --from-job ID`: an empty checkpoint becomes the path of the job's newest
// "checkpoint" artifact, an empty model the model its spec names. INVALID_ARGUMENT when the
// job has neither (naming the flag to pass instead), the RPC's own code for a failed call
// (UNAVAILABLE when the daemon cannot be reached, NOT_FOUND for an unknown job).
absl::Status FillExportFromJob(Connection& connection, int64_t job_id, v1::ExportSpec* spec);

}  // namespace qatd::client

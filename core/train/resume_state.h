#pragma once
// The resume/ directory of a trainer's output_dir: what a killed or cancelled job needs to
// continue exactly where it stopped (the e2e and layer-wise trainers; DESIGN.md "Trainers").
//
// Layout (unchanged since the first trainers; tests/core/train/resume_compat_test.cc pins it):
//   config.json             SaveStudent's, extra {"step": step}
//   model.safetensors       the student's quant state (SaveStudent)
//   <name>.safetensors      one per entry of ResumeState::tensors ("optimizer" = AdamW::State(),
//                           the layer-wise trainer's "layer_start" keep-best snapshot)
//   trainer_state.json      ResumeState::fields plus the common keys: <step_key> (the step),
//                           "cursor" (KdCursor), "elapsed_sec", "log" (TrainLog rows) and
//                           "fingerprint"; written with dump(1)
// The directory is replaced atomically (SaveStudent: a temporary directory renamed into
// place; every file in it written with WriteFileAtomically / WriteTensorMap), so a crash
// leaves the previous resume/ or the new one, never a mix.
//
// Thread safety: a ResumeDir is immutable; concurrent Save calls on one directory are not
// supported (data parallel: rank 0 alone saves, the others only load).

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/kd/cache_reader.h"
#include "core/quant/tensor_io.h"
#include "core/train/student.h"

namespace qatd::train {

// The files a trainer writes under output_dir.
struct TrainPaths {
  explicit TrainPaths(const std::string& output_dir);
  std::string resume, best, log_csv;
};

// Everything resume/ holds. `fields` are the trainer's own keys of trainer_state.json; they must
// not use the common keys.
struct ResumeState {
  nlohmann::json fingerprint;                      // the settings a continuation must share
  int64_t step = 0;                                // optimizer steps done in total
  kd::KdCursor cursor;                             // the training stream's position
  double elapsed_sec = 0;                          // wall time of the job before this point
  nlohmann::json log = nlohmann::json::array();    // TrainLog::ToJson()
  nlohmann::json fields = nlohmann::json::object();
  quant::TensorMap model;                          // Load only: model.safetensors (Save writes the student)
  std::map<std::string, quant::TensorMap> tensors; // <name>.safetensors

  // A tensor file that must be there (Load): NOT_FOUND naming the file otherwise.
  absl::StatusOr<const quant::TensorMap*> Tensors(const std::string& name) const;
};

class ResumeDir {
 public:
  struct Options {
    // The trainer_state.json key of ResumeState::step (the e2e trainer's "step", the
    // layer-wise trainer's "global_step").
    std::string step_key = "step";
  };
  ResumeDir(std::string path, Options options);

  const std::string& path() const { return path_; }
  // True when trainer_state.json is there (a job wrote a resume point).
  bool Exists() const;
  // Removes the directory (a fresh start). Errors are ignored by the callers on purpose.
  absl::Status Clear() const;

  // Writes `student` and `state` (its `model` is ignored) as the new resume/, atomically.
  absl::Status Save(Student& student, const ResumeState& state) const;

  // Reads trainer_state.json, model.safetensors and every other *.safetensors. Errors:
  // FAILED_PRECONDITION when the stored fingerprint is not `fingerprint`, naming the keys that
  // differ and both values (use a new output_dir); DATA_LOSS naming a missing or malformed
  // key; NOT_FOUND / DATA_LOSS from the files.
  absl::StatusOr<ResumeState> Load(const nlohmann::json& fingerprint) const;

 private:
  std::string path_;
  Options options_;
};

}  // namespace qatd::train

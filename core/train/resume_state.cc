#include "core/train/resume_state.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/train/json_file.h"

namespace qatd::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kTensorExt = ".safetensors";

// The keys of `a` and `b` whose values differ (either side may lack them).
std::vector<std::string> DifferingKeys(const nlohmann::json& a, const nlohmann::json& b) {
  std::vector<std::string> out;
  if (!a.is_object() || !b.is_object()) return out;
  for (const auto& [k, v] : a.items()) {
    if (!b.contains(k) || b.at(k) != v) out.push_back(k);
  }
  for (const auto& [k, v] : b.items()) {
    if (!a.contains(k)) out.push_back(k);
  }
  return out;
}

}  // namespace

TrainPaths::TrainPaths(const std::string& output_dir)
    : resume((fs::path(output_dir) / "resume").string()),
      best((fs::path(output_dir) / "best").string()),
      log_csv((fs::path(output_dir) / "training_log.csv").string()) {}

absl::StatusOr<const quant::TensorMap*> ResumeState::Tensors(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    return absl::NotFoundError(absl::StrCat("the resume checkpoint has no ", name, kTensorExt));
  }
  return &it->second;
}

ResumeDir::ResumeDir(std::string path, Options options) : path_(std::move(path)), options_(std::move(options)) {}

bool ResumeDir::Exists() const {
  std::error_code ec;
  return fs::is_regular_file(fs::path(path_) / kStateFile, ec);
}

absl::Status ResumeDir::Clear() const { return RemoveTree(path_); }

absl::Status ResumeDir::Save(Student& student, const ResumeState& state) const {
  nlohmann::json doc = state.fields;
  doc[options_.step_key] = state.step;
  doc["cursor"] = state.cursor.ToJson();
  doc["elapsed_sec"] = state.elapsed_sec;
  doc["log"] = state.log;
  doc["fingerprint"] = state.fingerprint;
  return SaveStudent(student, path_, {{"step", state.step}}, false, [&](const std::string& tmp) -> absl::Status {
    for (const auto& [name, tensors] : state.tensors) {
      QATD_RETURN_IF_ERROR(quant::WriteTensorMap((fs::path(tmp) / (name + kTensorExt)).string(), tensors));
    }
    return WriteFileAtomically((fs::path(tmp) / kStateFile).string(), doc.dump(1) + "\n");
  });
}

absl::StatusOr<ResumeState> ResumeDir::Load(const nlohmann::json& fingerprint) const {
  const std::string state_path = (fs::path(path_) / kStateFile).string();
  QATD_ASSIGN_OR_RETURN(nlohmann::json doc, ReadJson(state_path));
  const nlohmann::json stored = doc.is_object() ? doc.value("fingerprint", nlohmann::json()) : nlohmann::json();
  if (stored != fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume from ", path_, ": it was written with ", stored.dump(), ", this job has ",
                     fingerprint.dump(), " (differs in: ", absl::StrJoin(DifferingKeys(stored, fingerprint), ", "),
                     "; use a new output_dir)"));
  }
  ResumeState st;
  st.fingerprint = stored;
  for (const char* key : {"cursor", "log"}) {
    if (!doc.contains(key)) return absl::DataLossError(absl::StrCat(state_path, ": no \"", key, "\""));
  }
  if (!doc.contains(options_.step_key) || !doc.at(options_.step_key).is_number_integer()) {
    return absl::DataLossError(absl::StrCat(state_path, ": \"", options_.step_key, "\" must be an integer"));
  }
  st.step = doc.at(options_.step_key).get<int64_t>();
  QATD_ASSIGN_OR_RETURN(st.cursor, kd::KdCursor::FromJson(doc.at("cursor")));
  st.elapsed_sec = doc.value("elapsed_sec", 0.0);
  st.log = doc.at("log");
  for (const char* key : {"cursor", "log", "elapsed_sec", "fingerprint"}) doc.erase(key);
  doc.erase(options_.step_key);
  st.fields = std::move(doc);

  QATD_ASSIGN_OR_RETURN(quant::LoadedTensors model, quant::ReadTensorMap((fs::path(path_) / kModelFile).string()));
  st.model = std::move(model.tensors);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path_, ec)) {
    const fs::path& p = entry.path();
    if (p.extension() != kTensorExt || p.filename() == kModelFile) continue;
    QATD_ASSIGN_OR_RETURN(quant::LoadedTensors t, quant::ReadTensorMap(p.string()));
    st.tensors[p.stem().string()] = std::move(t.tensors);
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", path_, ": ", ec.message()));
  return st;
}

}  // namespace qatd::train

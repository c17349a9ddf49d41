#include "server/job_registry.h"

#include "absl/strings/str_cat.h"
#include "storage/job_codec.h"

namespace qatd::server {

void JobRegistry::Register(v1::JobKind kind, JobFunction run, JobValidator validate) {
  entries_[kind] = Entry{std::move(run), std::move(validate)};
}

const JobFunction* JobRegistry::Find(v1::JobKind kind) const {
  auto it = entries_.find(kind);
  return it == entries_.end() ? nullptr : &it->second.run;
}

absl::Status JobRegistry::Validate(const v1::JobSpec& spec, const std::string& prefix) const {
  auto it = entries_.find(storage::JobKindOf(spec));
  if (it == entries_.end() || !it->second.validate) return absl::OkStatus();
  absl::Status status = it->second.validate(spec);
  if (status.ok()) return status;
  const auto* oneof = v1::JobSpec::descriptor()->FindOneofByName("kind");
  const auto* field = spec.GetReflection()->GetOneofFieldDescriptor(spec, oneof);
  return absl::Status(status.code(), absl::StrCat(prefix, ".", field->name(), ".", std::string(status.message())));
}

std::vector<v1::JobKind> JobRegistry::Kinds() const {
  std::vector<v1::JobKind> kinds;
  for (const auto& [kind, entry] : entries_) kinds.push_back(kind);
  return kinds;
}

std::string ResolveOutputDir(const std::string& spec_output_dir, const v1::WorkerTask& task) {
  return spec_output_dir.empty() ? task.output_dir() : spec_output_dir;
}

}  // namespace qatd::server

#include "worker/job_registry.h"

namespace qatd::worker {

void JobRegistry::Register(v1::JobKind kind, JobFunction run) { entries_[kind] = std::move(run); }

const JobFunction* JobRegistry::Find(v1::JobKind kind) const {
  auto it = entries_.find(kind);
  return it == entries_.end() ? nullptr : &it->second;
}

void JobRegistry::RegisterSession(v1::JobKind kind, SessionFunction run) { sessions_[kind] = std::move(run); }

const SessionFunction* JobRegistry::FindSession(v1::JobKind kind) const {
  auto it = sessions_.find(kind);
  return it == sessions_.end() ? nullptr : &it->second;
}

bool IsSession(const v1::JobSpec& spec) { return spec.has_generate() && spec.generate().session(); }

std::vector<v1::JobKind> JobRegistry::Kinds() const {
  std::vector<v1::JobKind> kinds;
  for (const auto& [kind, entry] : entries_) kinds.push_back(kind);
  return kinds;
}

}  // namespace qatd::worker

#include "worker/job_registry.h"

namespace qatd::worker {

void JobRegistry::Register(v1::JobKind kind, JobFunction run) { entries_[kind] = std::move(run); }

const JobFunction* JobRegistry::Find(v1::JobKind kind) const {
  auto it = entries_.find(kind);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<v1::JobKind> JobRegistry::Kinds() const {
  std::vector<v1::JobKind> kinds;
  for (const auto& [kind, entry] : entries_) kinds.push_back(kind);
  return kinds;
}

}  // namespace qatd::worker

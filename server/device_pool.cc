#include "server/device_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace qatd::server {

DevicePool::DevicePool(const std::vector<GpuInfo>& gpus, int max_jobs_per_device)
    : max_jobs_(std::max(1, max_jobs_per_device)), gpu_count_(static_cast<int>(gpus.size())) {
  for (const GpuInfo& gpu : gpus) {
    Slot slot;
    slot.info.set_id(std::to_string(gpu.index));
    slot.info.set_kind("cuda");
    slot.info.set_memory_total_bytes(gpu.memory_total_bytes);
    slot.info.set_memory_free_bytes(gpu.memory_free_bytes);
    slot.info.set_max_jobs(max_jobs_);
    slots_.push_back(slot);
  }
  Slot cpu;
  cpu.info.set_id(kCpuDevice);
  cpu.info.set_kind("cpu");
  cpu.info.set_max_jobs(max_jobs_);
  slots_.push_back(cpu);
}

absl::Status DevicePool::CheckFits(int device_count) const {
  if (device_count < 0) return absl::InvalidArgumentError("spec.resources.device_count must be >= 0");
  if (gpu_count_ > 0 && device_count > gpu_count_) {
    return absl::FailedPreconditionError(absl::StrCat("spec.resources.device_count is ", device_count,
                                                      " but this host has ", gpu_count_, " GPU(s)"));
  }
  return absl::OkStatus();
}

DevicePool::Slot* DevicePool::FindLocked(const std::string& id) {
  for (Slot& slot : slots_) {
    if (slot.info.id() == id) return &slot;
  }
  return nullptr;
}

std::optional<std::vector<std::string>> DevicePool::TryAcquire(int device_count) {
  std::lock_guard<std::mutex> lock(mu_);
  if (gpu_count_ == 0 || device_count == 0) {
    Slot* cpu = FindLocked(kCpuDevice);
    if (cpu->info.running_jobs() >= max_jobs_) return std::nullopt;
    cpu->info.set_running_jobs(cpu->info.running_jobs() + 1);
    return std::vector<std::string>{kCpuDevice};
  }
  if (device_count > gpu_count_) return std::nullopt;
  std::vector<Slot*> free;
  for (int i = 0; i < gpu_count_; ++i) {
    if (slots_[i].info.running_jobs() < max_jobs_) free.push_back(&slots_[i]);
  }
  if (static_cast<int>(free.size()) < device_count) return std::nullopt;
  std::stable_sort(free.begin(), free.end(), [](const Slot* a, const Slot* b) {
    if (a->info.running_jobs() != b->info.running_jobs()) return a->info.running_jobs() < b->info.running_jobs();
    return a->info.memory_free_bytes() > b->info.memory_free_bytes();
  });
  std::vector<std::string> ids;
  for (int i = 0; i < device_count; ++i) {
    free[i]->info.set_running_jobs(free[i]->info.running_jobs() + 1);
    ids.push_back(free[i]->info.id());
  }
  std::sort(ids.begin(), ids.end(), [](const std::string& a, const std::string& b) {
    return std::stoi(a) < std::stoi(b);
  });
  return ids;
}

void DevicePool::Release(const std::vector<std::string>& devices) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& id : devices) {
    Slot* slot = FindLocked(id);
    if (slot != nullptr && slot->info.running_jobs() > 0) slot->info.set_running_jobs(slot->info.running_jobs() - 1);
  }
}

void DevicePool::UpdateMemory(const std::vector<GpuInfo>& gpus) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const GpuInfo& gpu : gpus) {
    Slot* slot = FindLocked(std::to_string(gpu.index));
    if (slot == nullptr) continue;
    slot->info.set_memory_total_bytes(gpu.memory_total_bytes);
    slot->info.set_memory_free_bytes(gpu.memory_free_bytes);
  }
}

std::vector<v1::DeviceInfo> DevicePool::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::DeviceInfo> out;
  for (const Slot& slot : slots_) out.push_back(slot.info);
  return out;
}

std::string DevicePool::CudaVisibleDevices(const std::vector<std::string>& devices) {
  std::vector<std::string> gpus;
  for (const std::string& id : devices) {
    if (id != kCpuDevice) gpus.push_back(id);
  }
  return absl::StrJoin(gpus, ",");
}

}  // namespace qatd::server

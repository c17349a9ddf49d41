#include "server/nvml.h"

#include <dlfcn.h>

#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace qatd::server {
namespace {

// The few NVML declarations used (nvml.h, stable ABI since NVML 5): return codes are ints,
// NVML_SUCCESS = 0, NVML_ERROR_NOT_SUPPORTED = 3; a device handle is an opaque pointer.
using NvmlReturn = int;
using NvmlHandle = void*;
constexpr NvmlReturn kSuccess = 0;
constexpr NvmlReturn kNotSupported = 3;
struct NvmlMemory {
  unsigned long long total, free, used;  // NOLINT(runtime/int): NVML's nvmlMemory_t
};
struct NvmlUtilization {
  unsigned int gpu, memory;  // percent over the driver's last sample period
};

}  // namespace

struct Nvml::Api {
  void* handle = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*count)(unsigned int*) = nullptr;
  NvmlReturn (*by_index)(unsigned int, NvmlHandle*) = nullptr;
  NvmlReturn (*memory)(NvmlHandle, NvmlMemory*) = nullptr;
  NvmlReturn (*utilization)(NvmlHandle, NvmlUtilization*) = nullptr;
  const char* (*error_string)(NvmlReturn) = nullptr;

  std::string Error(const char* call, NvmlReturn rc) const {
    const char* text = error_string != nullptr ? error_string(rc) : nullptr;
    return absl::StrCat(call, " failed: ", text != nullptr ? text : "error", " (", rc, ")");
  }
};

absl::StatusOr<std::unique_ptr<Nvml>> Nvml::Load(const std::string& library) {
  const std::string name = library.empty() ? "libnvidia-ml.so.1" : library;
  auto api = std::make_unique<Api>();
  api->handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (api->handle == nullptr) {
    const char* why = ::dlerror();
    return absl::NotFoundError(absl::StrCat("cannot load ", name, ": ", why != nullptr ? why : "unknown error"));
  }
  auto close = [&] { ::dlclose(api->handle); };
  auto bind = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(api->handle, symbol));
    return fn != nullptr;
  };
  for (auto [ok, symbol] : {std::pair{bind(api->init, "nvmlInit_v2"), "nvmlInit_v2"},
                            std::pair{bind(api->shutdown, "nvmlShutdown"), "nvmlShutdown"},
                            std::pair{bind(api->count, "nvmlDeviceGetCount_v2"), "nvmlDeviceGetCount_v2"},
                            std::pair{bind(api->by_index, "nvmlDeviceGetHandleByIndex_v2"), "nvmlDeviceGetHandleByIndex_v2"},
                            std::pair{bind(api->memory, "nvmlDeviceGetMemoryInfo"), "nvmlDeviceGetMemoryInfo"},
                            std::pair{bind(api->utilization, "nvmlDeviceGetUtilizationRates"),
                                      "nvmlDeviceGetUtilizationRates"},
                            std::pair{bind(api->error_string, "nvmlErrorString"), "nvmlErrorString"}}) {
    if (!ok) {
      close();
      return absl::UnavailableError(absl::StrCat(name, " has no symbol ", symbol));
    }
  }
  if (NvmlReturn rc = api->init(); rc != kSuccess) {
    std::string message = api->Error("nvmlInit_v2", rc);
    close();
    return absl::UnavailableError(absl::StrCat(name, ": ", message));
  }
  return std::unique_ptr<Nvml>(new Nvml(std::move(api)));
}

Nvml::Nvml(std::unique_ptr<Api> api) : api_(std::move(api)) {}

Nvml::~Nvml() {
  api_->shutdown();
  ::dlclose(api_->handle);
}

absl::StatusOr<std::vector<NvmlDevice>> Nvml::Devices() const {
  unsigned int count = 0;
  if (NvmlReturn rc = api_->count(&count); rc != kSuccess) {
    return absl::UnavailableError(api_->Error("nvmlDeviceGetCount_v2", rc));
  }
  std::vector<NvmlDevice> devices;
  for (unsigned int i = 0; i < count; ++i) {
    NvmlHandle handle = nullptr;
    if (NvmlReturn rc = api_->by_index(i, &handle); rc != kSuccess) {
      return absl::UnavailableError(absl::StrCat("device ", i, ": ", api_->Error("nvmlDeviceGetHandleByIndex_v2", rc)));
    }
    NvmlMemory memory{};
    if (NvmlReturn rc = api_->memory(handle, &memory); rc != kSuccess) {
      return absl::UnavailableError(absl::StrCat("device ", i, ": ", api_->Error("nvmlDeviceGetMemoryInfo", rc)));
    }
    NvmlDevice d;
    d.index = static_cast<int>(i);
    d.memory_total_bytes = static_cast<int64_t>(memory.total);
    d.memory_free_bytes = static_cast<int64_t>(memory.free);
    d.memory_used_bytes = static_cast<int64_t>(memory.used);
    NvmlUtilization utilization{};
    if (NvmlReturn rc = api_->utilization(handle, &utilization); rc == kSuccess) {
      d.utilization = utilization.gpu / 100.0;
    } else if (rc != kNotSupported) {
      return absl::UnavailableError(absl::StrCat("device ", i, ": ", api_->Error("nvmlDeviceGetUtilizationRates", rc)));
    }
    devices.push_back(d);
  }
  return devices;
}

const Nvml* SharedNvml() {
  static const Nvml* const nvml = [] () -> const Nvml* {
    absl::StatusOr<std::unique_ptr<Nvml>> loaded = Nvml::Load();
    if (!loaded.ok()) {
      spdlog::info("NVML not used ({}): GPUs are found with nvidia-smi when it is on PATH", std::string(loaded.status().message()));
      return nullptr;
    }
    return loaded->release();  // process lifetime
  }();
  return nvml;
}

}  // namespace qatd::server

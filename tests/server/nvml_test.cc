// server/nvml.h against stand-in NVML libraries (fake_nvml.c): the real dlopen/dlsym path,
// the units, a device without utilisation, and the errors for a missing library or symbol.
// The real driver is checked on the GPU host (scripts/gpu/run-suite.sh runs this binary too,
// where SharedNvml() must find the GPUs).
#include "server/nvml.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace qatd::server {
namespace {

TEST(Nvml, ReadsMemoryAndUtilisationOfEveryDevice) {
  absl::StatusOr<std::unique_ptr<Nvml>> nvml = Nvml::Load(QATD_FAKE_NVML);
  ASSERT_TRUE(nvml.ok()) << nvml.status();
  absl::StatusOr<std::vector<NvmlDevice>> devices = (*nvml)->Devices();
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_EQ((*devices)[0].index, 0);
  EXPECT_EQ((*devices)[0].memory_total_bytes, int64_t{80} << 30);
  EXPECT_EQ((*devices)[0].memory_used_bytes, int64_t{1} << 30);
  EXPECT_EQ((*devices)[0].memory_free_bytes, (int64_t{80} << 30) - (int64_t{1} << 30));
  EXPECT_DOUBLE_EQ((*devices)[0].utilization, 0.37);
  EXPECT_EQ((*devices)[1].memory_used_bytes, int64_t{2} << 30);
  EXPECT_EQ((*devices)[1].utilization, -1);  // NOT_SUPPORTED: unknown, not an error
}

TEST(Nvml, AMissingLibraryIsNotFound) {
  absl::StatusOr<std::unique_ptr<Nvml>> nvml = Nvml::Load("/nonexistent/libnvidia-ml.so.1");
  ASSERT_FALSE(nvml.ok());
  EXPECT_EQ(nvml.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(nvml.status().message(), "/nonexistent/libnvidia-ml.so.1")) << nvml.status();
}

TEST(Nvml, AMissingSymbolIsNamed) {
  absl::StatusOr<std::unique_ptr<Nvml>> nvml = Nvml::Load(QATD_FAKE_NVML_NO_UTILIZATION);
  ASSERT_FALSE(nvml.ok());
  EXPECT_EQ(nvml.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(nvml.status().message(), "nvmlDeviceGetUtilizationRates")) << nvml.status();
}

}  // namespace
}  // namespace qatd::server

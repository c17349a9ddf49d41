#pragma once
// Helpers shared by the job kinds' option structs (core/jobs/<kind>_options.h): the checks
// their Validate() use and the proto -> option conversions their FromProto() share.
// LibTorch-free (qatd_core_base).

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/quant/quant_config.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::jobs {

// INVALID_ARGUMENT "<field> is required" when `value` is empty.
absl::Status RequireField(const std::string& value, const char* field);
// INVALID_ARGUMENT "<field> must be in [lo, hi], got v".
absl::Status CheckRange(const char* field, int64_t value, int64_t lo, int64_t hi);
// A job's compute dtype; kAuto lets the job choose (its header says how).
enum class Dtype { kAuto, kBf16, kFp16, kFp32 };
// "auto", "bf16", "fp16", "fp32": the spelling the trainers and model loaders take.
const char* DtypeName(Dtype dtype);
// The CLIs' spellings: auto | bf16 | fp16 | fp32 (and bfloat16, float16, float32).
absl::StatusOr<Dtype> ParseDtype(const std::string& name);
Dtype DtypeFromProto(v1::Dtype dtype);  // DTYPE_UNSPECIFIED -> kAuto
// device: auto | cpu | cuda | cuda:N.
absl::Status CheckDeviceName(const std::string& device);

// Where the job runs. `task` is null at submit time (validation only): the device is then the
// CPU and an empty output directory becomes a placeholder, since the daemon fills it in.
// The worker sees only its own GPUs (CUDA_VISIBLE_DEVICES), renumbered from 0.
std::string DeviceOf(const v1::WorkerTask* task);
std::string OutputDirOf(const std::string& spec_output_dir, const v1::WorkerTask* task);
// The spec's output directory if set, else the task's default.
std::string ResolveOutputDir(const std::string& spec_output_dir, const v1::WorkerTask& task);
// A re-run after a daemon restart (attempt > 1) continues what an earlier attempt made durable.
bool IsRerun(const v1::WorkerTask* task);

// QuantSettings -> QuantConfig: preset first (else `base`), then every field that is set;
// errors are prefixed "quant." / "quant_v2.".
absl::StatusOr<quant::QuantConfig> QuantFromProto(const v1::QuantSettings& q, quant::QuantConfig base);
absl::StatusOr<quant::QuantConfigV2> QuantV2FromProto(const v1::QuantSettingsV2& q);

}  // namespace qatd::jobs

#pragma once
// The worker memory limit (issue #14, `qatd --worker-memory-limit SIZE`): its size syntax, how
// the daemon hands it to a worker, and how a worker that hits it reports.
//
// The daemon applies the limit between fork and exec as RLIMIT_DATA (server/worker_launcher.cc)
// and passes it in $QATD_WORKER_MEMORY_LIMIT_BYTES. RLIMIT_DATA (Linux >= 4.7) counts private
// writable mappings: the malloc heap, anonymous mmaps (LibTorch's CPU tensors), thread stacks,
// library data. So an allocation beyond the limit fails inside the worker (std::bad_alloc,
// LibTorch's "DefaultCPUAllocator: can't allocate memory", ENOMEM) instead of the kernel's OOM
// killer picking a process, maybe the daemon. Not counted: GPU memory, read-only and shared
// file mappings (mmapped safetensors), page cache. RLIMIT_AS is not used because CUDA reserves
// terabytes of PROT_NONE address space.
//
// LibTorch-free; linked by the daemon and the worker (qatd_worker_protocol).

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd::worker {

// The limit in bytes as a decimal number; absent = no limit.
inline constexpr char kMemoryLimitEnv[] = "QATD_WORKER_MEMORY_LIMIT_BYTES";

// The smallest limit the daemon accepts (0 = none aside). Measured on 2 cores: qatd-worker
// reserves ~0.35 GiB of data address space while LibTorch loads (below that it aborts with
// std::bad_alloc or spins in glibc during static initialization, never reaching the job), and
// a KD_CACHE job on the tiny test model peaks at ~0.6 GiB; more cores, more thread stacks.
inline constexpr uint64_t kMinMemoryLimitBytes = uint64_t{1} << 30;

// "16GiB", "512 MiB", "2G", "1500MB", "1073741824": a whole number, optionally followed by a
// unit: B; K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024); KB, MB, GB, TB (powers of 1000).
// Units are case-insensitive. INVALID_ARGUMENT naming the accepted forms, or on overflow.
absl::StatusOr<uint64_t> ParseMemorySize(std::string_view text);

// "16 GiB", "512 MiB", "1536 KiB": the largest binary unit that divides `bytes`; else "N bytes".
std::string FormatMemorySize(uint64_t bytes);

// The daemon's --worker-memory-limit: a size that is 0 (no limit) or at least
// kMinMemoryLimitBytes. INVALID_ARGUMENT "must be 0 (no limit) or at least 1 GiB (...), got
// 512 MiB" (the command line parser prefixes the flag's name).
absl::StatusOr<uint64_t> ParseWorkerMemoryLimit(std::string_view text);

// This worker's limit from kMemoryLimitEnv; 0 when unset or not a number.
uint64_t MemoryLimitFromEnvironment();

// Whether `status` reports a failed host memory allocation (std::bad_alloc, LibTorch's
// DefaultCPUAllocator, ENOMEM's "Cannot allocate memory"). A CUDA out-of-memory error is not
// one: the limit does not cover GPU memory.
bool IsHostAllocationFailure(const absl::Status& status);

// A job's final status as reported: a host allocation failure becomes RESOURCE_EXHAUSTED,
// "exceeded the worker memory limit (4 GiB): <message>" when `limit_bytes` > 0 (with the
// message unchanged when there is no limit); anything else is returned unchanged.
absl::Status ExplainAllocationFailure(const absl::Status& status, uint64_t limit_bytes);

}  // namespace qatd::worker

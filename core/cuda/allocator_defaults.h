#pragma once
// LibTorch-free: the daemon's main() (server/, built without LibTorch's include paths) calls it.

namespace qatd::cuda {

// Sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True unless the variable is already set
// (LibTorch >= 2.1; a no-op otherwise). Call first thing in main(), before any CUDA allocation:
// with a training step captured as a CUDA graph (train/micro_step.h) the caching allocator's
// fixed-size segments fragmented a Qwen3-0.6B QAT run to 15.5 GiB reserved for 13.5 GiB in use;
// expandable segments hold 13.8 GiB (H100, bench/results/qat_h100.json). Defined in fused_ops.cc.
void SetAllocatorDefaults();

}  // namespace qatd::cuda

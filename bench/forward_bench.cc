// forward_bench: throughput of the Qwen3 forward (no grad) on a randomly initialised model
// of a given config. Prints one JSON object.
//
//   forward_bench --config tests/data/golden/qwen3-0.6b/config.json \
//       [--batch 32 --seq 128 --dtype bf16 --iters 10 --warmup 2 --device auto \
//        --logits all|last|none --threads N]
//
// Timed: Forward + Logits for every position (`--logits all`, what a KD/QAT training step
// computes), only the last position (`last`), or none. Peak memory is the CUDA caching
// allocator's peak allocated bytes on CUDA builds, the process's max RSS on the CPU.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "core/cuda/fused_ops.h"
#include "core/model/model_io.h"
#include "core/model/qwen3_config.h"
#include "core/model/qwen3_model.h"
#include "nlohmann/json.hpp"

#ifdef QATD_WITH_C10_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

void Sync(const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

int64_t CpuMaxRssBytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux: kilobytes
}

}  // namespace

int main(int argc, char** argv) {
  qatd::cuda::SetAllocatorDefaults();  // before any CUDA allocation
  CLI::App app{"Qwen3 forward throughput (random weights)"};
  std::string config_path, dtype_name = "bf16", device_name = "auto", logits_mode = "all";
  int64_t batch = 32, seq = 128, iters = 10, warmup = 2, threads = 0;
  uint64_t seed = 0;
  app.add_option("--config", config_path, "HF config.json (or its folder)")->required();
  app.add_option("--batch", batch, "sequences per forward")->check(CLI::PositiveNumber);
  app.add_option("--seq", seq, "tokens per sequence")->check(CLI::PositiveNumber);
  app.add_option("--dtype", dtype_name, "fp32, bf16 or fp16");
  app.add_option("--iters", iters, "timed iterations")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed iterations first")->check(CLI::NonNegativeNumber);
  app.add_option("--device", device_name, "auto, cpu, cuda or cuda:N");
  app.add_option("--logits", logits_mode, "all, last or none")->check(CLI::IsMember({"all", "last", "none"}));
  app.add_option("--threads", threads, "intra-op CPU threads (0: all cores)");
  app.add_option("--seed", seed, "init seed");
  CLI11_PARSE(app, argc, argv);

  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(threads));

  auto config = qatd::model::Qwen3Config::FromFile(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 2;
  }
  auto dtype = qatd::model::ParseTorchDtype(dtype_name);
  if (!dtype.ok()) {
    std::fprintf(stderr, "%s\n", dtype.status().ToString().c_str());
    return 2;
  }
  if (device_name == "auto") device_name = torch::cuda::is_available() ? "cuda" : "cpu";
  const at::Device device(device_name);

  const auto init_start = Clock::now();
  auto model = qatd::model::InitTinyQwen3(*config, qatd::model::InitOptions{seed, 0.02, *dtype, device});
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  (*model)->eval();
  Sync(device);
  const double init_seconds = std::chrono::duration<double>(Clock::now() - init_start).count();

  int64_t params = 0, linear_params = 0;
  for (const auto& p : (*model)->parameters()) params += p.numel();
  for (const auto& name : (*model)->LinearNames()) {
    auto layer = (*model)->GetLinear(name);
    linear_params += layer->in_features() * layer->out_features();
  }

  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(0, config->vocab_size, {batch, seq}, at::TensorOptions().dtype(at::kLong)).to(device);
  auto step = [&]() {
    at::Tensor hidden = (*model)->Forward(ids);
    if (logits_mode == "all") return (*model)->Logits(hidden);
    if (logits_mode == "last") return (*model)->Logits(hidden.select(1, seq - 1));
    return hidden;
  };
  for (int64_t i = 0; i < warmup; ++i) step();
  Sync(device);
#ifdef QATD_WITH_C10_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
  const auto start = Clock::now();
  for (int64_t i = 0; i < iters; ++i) step();
  // Host time to issue the work; close to `seconds` on CUDA means launch-bound.
  const double issue_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  Sync(device);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  int64_t peak_bytes = -1;
  std::string peak_kind = "cpu_maxrss";
  if (device.is_cpu()) {
    peak_bytes = CpuMaxRssBytes();
  } else {
#ifdef QATD_WITH_C10_CUDA
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    peak_bytes = stats.allocated_bytes[0].peak;  // [0]: all pools
    peak_kind = "cuda_allocator_peak_allocated";
#else
    peak_kind = "unavailable";
#endif
  }

  // Matmul FLOPs per token: projections, causal attention (q k^T and p v, on average over
  // S/2 keys), and the lm_head for the positions whose logits are computed.
  const auto& c = *config;
  const double tokens = static_cast<double>(batch) * seq * iters;
  const double attn_flops = 2.0 * 2.0 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * (seq / 2.0);
  double flops_per_token = 2.0 * linear_params + attn_flops;
  if (logits_mode == "all") flops_per_token += 2.0 * c.vocab_size * c.hidden_size;
  if (logits_mode == "last") flops_per_token += 2.0 * c.vocab_size * c.hidden_size / seq;

  nlohmann::json out = {
      {"bench", "forward"},
      {"config", config_path},
      {"torch_version", TORCH_VERSION},
      {"device", device.str()},
      {"threads", threads},
      {"dtype", qatd::model::TorchDtypeName(*dtype)},
      {"batch", batch},
      {"seq", seq},
      {"logits", logits_mode},
      {"warmup", warmup},
      {"iters", iters},
      {"params", params},
      {"init_seconds", init_seconds},
      {"seconds_per_iter", seconds / iters},
      {"host_issue_seconds_per_iter", issue_seconds / iters},
      {"tokens_per_second", tokens / seconds},
      {"tflops", flops_per_token * tokens / seconds / 1e12},
      {"peak_memory_bytes", peak_bytes},
      {"peak_memory_kind", peak_kind},
  };
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

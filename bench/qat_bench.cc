// qat_bench: QAT training-step throughput and peak memory on a random-init Qwen3 of a given
// config (default: Qwen3-0.6B's shape), the way core/train's end-to-end trainer steps:
// forward through the quantized student, the global KD loss (top-K KL at T=2 + hard_full CE
// over the full vocabulary, chunked), backward, AdamW (fp32 masters for bf16 parameters).
// Synthetic batches (random ids and teacher top-K) keep the bench independent of a cache.
//
//   qat_bench [--config PATH] [--device auto|cpu|cuda] [--batch 32] [--seq 128] [--topk 32]
//             [--steps 10] [--warmup 3] [--dtype bf16] [--variants v1_scales,v1_weights,v2_q2]
//             [--threads N] [--dist [--bucket-mb 25]]
//
// Variants:
//   v1_scales   V1 Q4_A4 (LUT16, group 32, rank 4; MLP + attention), scale_A/scale_B trainable
//   v1_weights  the same, latent weights trainable
//   plain_weights  no quantization, every decoder linear trainable: the floor for the above
//   v2_q2       V2 Q2_A4 (MLP LUT4 rank 32, attention LUT16 rank 8), A/B/g trainable, frozen
//               indices, STE-FP16 (the V2 scripts' settings)
// The step is the trainer's (train/micro_step.h: CUDA graph replays on a GPU; --no-graphs for
// eager steps); the phase breakdown is measured on extra eager steps with a sync per phase.
// Prints one JSON object: per variant tokens/s, ms/step and peak memory over the whole variant
// (CUDA allocator peaks of allocated and of reserved bytes on GPU builds, max RSS on the CPU),
// plus the ratio of v2_q2 to v1_weights.
//
// --dist (issue #15: one rank must stay within 3 % of the single-device step): per variant,
// also the trainer's step (train_step.h RunMicroBatches + ApplyStep, same synthetic batch,
// same MicroStep) without a process group and through a forced one-rank DistGroup (NCCL on
// CUDA when built with it, Gloo on the CPU): store, process group and every collective run for
// real. Reports both tokens/s and dist_over_single (1.0 = no overhead) under "trainer_step";
// one run each, no assertion.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "core/cuda/fused_ops.h"
#include "core/model/model_io.h"
#include "core/quant/quant_linear_v2.h"
#include "core/quant/quantize_model.h"
#include "core/train/losses.h"
#include "core/train/micro_step.h"
#include "core/train/optimizer.h"
#include "core/train/dist_group.h"
#include "core/train/train_common.h"
#include "core/train/train_step.h"
#include "nlohmann/json.hpp"

#ifdef QATD_WITH_C10_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#include <ATen/record_function.h>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/autograd/profiler_kineto.h>
#define QATD_BENCH_PROFILER 1
#endif

namespace {

using Clock = std::chrono::steady_clock;

void Sync(const at::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index() < 0 ? 0 : d.index());
}

int64_t CpuMaxRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

}  // namespace

int main(int argc, char** argv) {
  qatd::cuda::SetAllocatorDefaults();  // before any CUDA allocation
  CLI::App app{"QAT training-step throughput (tokens/s) and peak memory"};
  std::string config_path = QATD_BENCH_CONFIG, device_name = "auto", dtype_name = "bf16";
  std::string variants = "v1_scales,v1_weights,v2_q2";
  int64_t batch = 32, seq = 128, topk = 32, steps = 10, warmup = 3, threads = 0, chunk_rows = 1024;
  double hard_full = 0.0005;
  app.add_option("--config", config_path, "config.json of the model shape");
  app.add_option("--device", device_name, "auto, cpu, cuda or cuda:N");
  app.add_option("--dtype", dtype_name, "parameter dtype: bfloat16/bf16, float32/fp32");
  app.add_option("--batch", batch, "sequences per step");
  app.add_option("--seq", seq, "tokens per sequence (L)");
  app.add_option("--topk", topk, "teacher top-K");
  app.add_option("--steps", steps, "timed steps per variant");
  app.add_option("--warmup", warmup, "untimed steps per variant");
  app.add_option("--variants", variants, "comma-separated: v1_scales, v1_weights, v2_q2");
  app.add_option("--hard-full-weight", hard_full, "weight of the full-vocabulary CE (0 skips it)");
  app.add_option("--chunk-rows", chunk_rows, "full-vocabulary rows per chunk");
  app.add_option("--threads", threads, "intra-op CPU threads (0: all cores)");
  std::string profile_dir;
  app.add_option("--profile", profile_dir,
                 "LibTorch 2.x: also write one profiled step per variant as a Chrome trace DIR/<variant>.json "
                 "(phases as user annotations)");
  bool no_graphs = false;
  app.add_flag("--no-graphs", no_graphs, "run every step eagerly (no CUDA graph capture)");
  bool factored = false;
  app.add_flag("--v2-factored", factored, "V2: the reference's factored per-rank STE forward instead of the dense fp16-STE weight");
  bool dist = false;
  app.add_flag("--dist", dist,
               "also time the trainer's step without a process group and through a forced one-rank group "
               "(NCCL on CUDA, Gloo on CPU) and report the ratio");
  double bucket_mb = 25;
  app.add_option("--bucket-mb", bucket_mb, "--dist: gradient all-reduce bucket size in MB (DistOptions::bucket_bytes)");
  CLI11_PARSE(app, argc, argv);
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(threads));
  if (dtype_name == "bf16") dtype_name = "bfloat16";
  if (dtype_name == "fp32") dtype_name = "float32";

  auto config = qatd::model::Qwen3Config::FromFile(config_path);
  auto dtype = qatd::model::ParseTorchDtype(dtype_name);
  if (!config.ok() || !dtype.ok()) {
    std::fprintf(stderr, "%s\n", (!config.ok() ? config.status() : dtype.status()).ToString().c_str());
    return 2;
  }
  if (device_name == "auto") device_name = torch::cuda::is_available() ? "cuda" : "cpu";
  const at::Device device(device_name);
  nlohmann::json results = nlohmann::json::object();
  std::unique_ptr<qatd::train::DistGroup> group;
  if (dist) {
    qatd::train::DistOptions o;
    o.force_group = true;
    o.device = device.str();
    o.bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
    o.timeout = std::chrono::minutes(5);
    auto made = qatd::train::DistGroup::Create(o);
    absl::Status st = made.ok() ? (*made)->Connect() : made.status();
    if (!st.ok()) {
      std::fprintf(stderr, "--dist: %s\n", st.ToString().c_str());
      return 1;
    }
    group = *std::move(made);
  }

  for (const auto& variant_view : absl::StrSplit(variants, ',')) {
    const std::string variant(variant_view);
#ifdef QATD_WITH_C10_CUDA
    // Peaks cover the whole variant: weights, optimizer state, the warm-up and the CUDA graph's
    // private pool (whose memory is reserved, not allocated, between replays: hence both).
    if (device.is_cuda()) {
      (void)at::empty({1}, at::TensorOptions().device(device));  // creates the CUDA context first
      c10::cuda::CUDACachingAllocator::emptyCache();
      c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
    }
#endif
    auto model = qatd::model::InitTinyQwen3(*config, qatd::model::InitOptions{1, 0.02, *dtype, device});
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
      return 1;
    }
    auto registry = qatd::quant::MakeQwen3Registry(**model);
    qatd::quant::TrainableSet set;
    const auto init_start = Clock::now();
    absl::Status st;
    if (variant == "plain_weights") {
      // Baseline: no quantization, every decoder linear trainable (what the QAT step costs
      // without fake quant).
      (*model)->train();
      for (auto& item : (*model)->named_parameters()) {
        const bool linear = item.key().find("_proj.weight") != std::string::npos;
        item.value().requires_grad_(linear);
      }
    } else if (variant == "v2_q2") {
      auto cfg = qatd::quant::QuantConfigV2::FromPreset("Q2_A4");
      cfg->quantize_attn = true;
      st = qatd::quant::QuantizeLinearsV2(*registry, *cfg, /*freeze_q=*/true).status();
      set.scales = true;
      if (st.ok() && !factored) {  // what the V2 trainer does by default (V2ForwardPath::kDenseSte)
        for (const auto& [name, layer] : qatd::quant::QuantizedLayers(*registry)) {
          if (auto* v2 = dynamic_cast<qatd::quant::QuantLinearV2*>(layer.get())) {
            v2->set_forward_path(qatd::quant::V2ForwardPath::kDenseSte);
          }
        }
      }
    } else {
      auto cfg = qatd::quant::QuantConfig::FromPreset("Q4_A4");
      st = qatd::quant::QuantizeLinears(*registry, *cfg).status();
      set.scales = variant == "v1_scales";
      set.weights = variant == "v1_weights";
      if (!set.scales && !set.weights) st = absl::InvalidArgumentError("unknown variant " + variant);
    }
    if (st.ok() && variant != "plain_weights") st = qatd::quant::ApplyTrainableSet(*registry, set);
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", variant.c_str(), st.ToString().c_str());
      return 1;
    }
    Sync(device);
    const double init_seconds = std::chrono::duration<double>(Clock::now() - init_start).count();
    auto params = qatd::train::TrainableParameters(**model);
    int64_t trainable = 0;
    for (auto& [n, p] : params) trainable += p.numel();
    qatd::train::AdamW adam(params, {});
    const qatd::train::KdLossWeights weights{2.0, 0.0, hard_full};
    // The trainer's micro-step (CUDA graph replays on a GPU unless --no-graphs).
    qatd::train::MicroStep micro(**model, weights, chunk_rows, !no_graphs);
    adam.set_zero_grads_in_place(micro.may_use_graphs());
    auto opts = at::TensorOptions().device(device);
    at::Tensor ids = at::randint(0, config->vocab_size, {batch, seq}, opts.dtype(at::kLong));
    at::Tensor topk_idx = at::randint(0, config->vocab_size, {batch, seq - 1, topk}, opts.dtype(at::kLong));
    at::Tensor topk_logits = (at::randn({batch, seq - 1, topk}, opts.dtype(at::kFloat)) * 3).to(at::kHalf);
    double last_loss = 0;
    auto step = [&]() {
      adam.ZeroGrad();
      at::Tensor row = *micro.Run(ids, topk_idx, topk_logits, 1.0);
      adam.Step(1e-5);
      return row[0];
    };
    for (int64_t i = 0; i < warmup; ++i) last_loss = step().item<double>();
    Sync(device);
#ifdef QATD_WITH_C10_CUDA
#endif
    const auto start = Clock::now();
    for (int64_t i = 0; i < steps; ++i) last_loss = step().item<double>();  // the trainer syncs per step too
    Sync(device);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    int64_t peak = device.is_cpu() ? CpuMaxRssBytes() : -1, peak_reserved = -1;
#ifdef QATD_WITH_C10_CUDA
    if (device.is_cuda()) {
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
      peak = stats.allocated_bytes[0].peak;
      peak_reserved = stats.reserved_bytes[0].peak;
    }
#endif
    // Phase breakdown (extra steps with a device sync after each phase).
    double phase[4] = {0, 0, 0, 0};
    const int64_t phase_steps = std::max<int64_t>(1, steps / 2);
    for (int64_t i = 0; i < phase_steps; ++i) {
      auto t0 = Clock::now();
      adam.ZeroGrad();
      at::Tensor hidden = (*model)->Forward(ids);
      Sync(device);
      auto t1 = Clock::now();
      at::Tensor w = (*model)->lm_head != nullptr ? (*model)->lm_head->EffectiveWeight()
                                                  : (*model)->model->embed_tokens->weight;
      auto terms = qatd::train::ComputeKdLoss(hidden, w, topk_idx, topk_logits, weights, chunk_rows);
      Sync(device);
      auto t2 = Clock::now();
      terms->total.backward();
      Sync(device);
      auto t3 = Clock::now();
      adam.Step(1e-5);
      Sync(device);
      auto t4 = Clock::now();
      phase[0] += std::chrono::duration<double>(t1 - t0).count();
      phase[1] += std::chrono::duration<double>(t2 - t1).count();
      phase[2] += std::chrono::duration<double>(t3 - t2).count();
      phase[3] += std::chrono::duration<double>(t4 - t3).count();
    }
#ifdef QATD_BENCH_PROFILER
    if (!profile_dir.empty()) {
      namespace tpi = torch::profiler::impl;
      const tpi::ProfilerConfig config(tpi::ProfilerState::KINETO);
      const std::set<tpi::ActivityType> activities{tpi::ActivityType::CPU, tpi::ActivityType::CUDA};
      torch::autograd::profiler::prepareProfiler(config, activities);
      torch::autograd::profiler::enableProfiler(config, activities);
      {
        RECORD_USER_SCOPE("phase_forward");
        adam.ZeroGrad();
      }
      at::Tensor hidden;
      {
        RECORD_USER_SCOPE("phase_forward");
        hidden = (*model)->Forward(ids);
      }
      qatd::train::KdLossTerms terms;
      {
        RECORD_USER_SCOPE("phase_loss");
        at::Tensor w = (*model)->lm_head != nullptr ? (*model)->lm_head->EffectiveWeight()
                                                    : (*model)->model->embed_tokens->weight;
        terms = *qatd::train::ComputeKdLoss(hidden, w, topk_idx, topk_logits, weights, chunk_rows);
      }
      {
        RECORD_USER_SCOPE("phase_backward");
        terms.total.backward();
      }
      {
        RECORD_USER_SCOPE("phase_optimizer");
        adam.Step(1e-5);
      }
      Sync(device);
      torch::autograd::profiler::disableProfiler()->save(profile_dir + "/" + variant + ".json");
    }
#endif
    const double tokens = static_cast<double>(batch) * seq * steps;
    nlohmann::json trainer_step;
    if (group != nullptr) {
      // The trainer's step, once without a group and once through the one-rank group.
      qatd::kd::KdBatch synthetic;
      synthetic.indices = at::arange(batch, at::kLong);
      synthetic.input_ids = ids;
      synthetic.topk_idx = topk_idx;
      synthetic.topk_logits = topk_logits;
      synthetic.global_rows = batch;
      const qatd::train::NextBatch next = [&]() -> absl::StatusOr<qatd::kd::KdBatch> { return synthetic; };
      auto time_steps = [&](qatd::train::DistGroup* g) -> absl::StatusOr<double> {
        Clock::time_point start;
        for (int64_t i = 0; i < warmup + steps; ++i) {
          if (i == warmup) {
            Sync(device);
            start = Clock::now();
          }
          auto values = qatd::train::RunMicroBatches(micro, next, 1, adam, g);
          if (!values.ok()) return values.status();
          if (absl::Status s = qatd::train::ApplyStep(adam, 1e-5, 0.0, *values, i + 1, g); !s.ok()) return s;
          last_loss = values->total;
        }
        Sync(device);
        return std::chrono::duration<double>(Clock::now() - start).count();
      };
      auto single = time_steps(nullptr);
      group->grad_sync_stats() = {};
      const int64_t collectives_before = group->collectives();
      auto distributed = time_steps(group.get());
      if (!single.ok() || !distributed.ok()) {
        std::fprintf(stderr, "%s --dist: %s\n", variant.c_str(),
                     (!single.ok() ? single.status() : distributed.status()).ToString().c_str());
        return 1;
      }
      const qatd::train::GradSyncStats& sync = group->grad_sync_stats();
      trainer_step = {{"tokens_per_second_single", tokens / *single},
                      {"tokens_per_second_dist", tokens / *distributed},
                      {"dist_over_single", *single / *distributed},
                      {"backend", group->backend_name()},
                      {"collectives_per_step", (group->collectives() - collectives_before) / double(warmup + steps)},
                      {"overlapped_steps", sync.overlapped_steps},
                      {"buckets_in_backward", sync.buckets_in_backward},
                      {"buckets_after_backward", sync.buckets_after_backward}};
      std::fprintf(stderr, "%s trainer step: %.0f tokens/s without a group, %.0f through a one-rank %s group (%.3f)\n",
                   variant.c_str(), tokens / *single, tokens / *distributed, group->backend_name(),
                   *single / *distributed);
    }
    results[variant] = {{"phase_ms", {{"forward", 1000 * phase[0] / phase_steps},
                                      {"loss_forward", 1000 * phase[1] / phase_steps},
                                      {"backward", 1000 * phase[2] / phase_steps},
                                      {"optimizer", 1000 * phase[3] / phase_steps}}},
                        {"tokens_per_second", tokens / seconds},
                        {"ms_per_step", 1000 * seconds / steps},
                        {"peak_memory_bytes", peak},
                        {"peak_memory_gib", peak / double(1 << 30)},
                        {"peak_reserved_bytes", peak_reserved},
                        {"peak_reserved_gib", peak_reserved / double(1 << 30)},
                        {"trainable_parameters", trainable},
                        {"quantize_seconds", init_seconds},
                        {"last_loss", last_loss},
                        {"cuda_graph_replays", micro.replays()}};
    if (!trainer_step.is_null()) results[variant]["trainer_step"] = trainer_step;
    std::fprintf(stderr, "%s: %.0f tokens/s, %.1f ms/step, peak %.2f GiB allocated, %.2f GiB reserved; eager phases ms: forward %.1f, loss %.1f, backward %.1f, adamw %.1f\n",
                 variant.c_str(), tokens / seconds, 1000 * seconds / steps, peak / double(1 << 30),
                 peak_reserved / double(1 << 30),
                 1000 * phase[0] / phase_steps, 1000 * phase[1] / phase_steps, 1000 * phase[2] / phase_steps,
                 1000 * phase[3] / phase_steps);
  }
  nlohmann::json out = {{"bench", "qat_step"},
                        {"config", config_path},
                        {"torch_version", TORCH_VERSION},
                        {"device", device.str()},
                        {"dtype", dtype_name},
                        {"threads", threads},
                        {"batch", batch},
                        {"seq", seq},
                        {"topk", topk},
                        {"hard_full_weight", hard_full},
                        {"steps", steps},
                        {"v2_forward", factored ? "factored_ste" : "dense_ste"},
                        {"warmup", warmup},
                        {"variants", results}};
  if (results.contains("v2_q2") && results.contains("v1_weights")) {
    out["v2_over_v1_weights_time_ratio"] =
        results["v1_weights"]["tokens_per_second"].get<double>() / results["v2_q2"]["tokens_per_second"].get<double>();
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

// quant_bench: forward+backward time of one quantized linear vs a plain linear, Qwen3-0.6B MLP
// shapes (1024->3072 and 3072->1024). Prints one JSON object.
//
//   quant_bench [--device auto|cpu|cuda] [--tokens N] [--iters N] [--warmup N]
//               [--dtypes fp32,bf16] [--threads N]
//
// Defaults: CUDA (if built with it): 32x128 = 4096 tokens, bf16; CPU: 256 tokens, fp32 and bf16.
// Variants (each step: forward, L = sum(y * gy), backward; x requires grad as inside a model):
//   plain                     y = x Wᵀ, W trainable
//   v1_q4_g32_r4_scales       V1 LUT16, group 32, rank 4, scales trainable
//   v1_q4_g32_r4_weights      the same with the latent weight trainable
//   v2_q2_r32_ste             V2 LUT4, rank 32, scales trainable, STE-fp16 (batched kernel)
//   v2_q2_r32_dense           the same without STE (dense kernel: the fast equivalent)
//   v2_q2_r32_dense_ste       dense with the effective weight rounded to fp16 through the STE
//                             (V2ForwardPath::kDenseSte: what the V2 trainer runs)
// Reported: median ms per step and the ratio to `plain` of the same shape and dtype; on CUDA
// also graph_ms / graph_ratio_vs_plain: the step captured as a CUDA graph and replayed, i.e. its
// GPU time without the host's launch cost (how the trainer runs it, train/micro_step.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "core/quant/quant_linear_v1.h"
#include "core/cuda/fused_ops.h"
#include "core/quant/quant_linear_v2.h"
#include "nlohmann/json.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using qatd::quant::LayerQuantSpec;
using qatd::quant::LayerQuantSpecV2;
using qatd::quant::MagnitudeActivation;
using qatd::quant::QuantLinearV1;
using qatd::quant::QuantLinearV2;

struct Options {
  std::string device = "auto";
  int64_t tokens = 0;  // 0: per-device default
  int iters = 0;
  int warmup = 1;
  std::string dtypes;
  int threads = 0;
};

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--device") o->device = next();
    else if (a == "--tokens") o->tokens = std::atoll(next().c_str());
    else if (a == "--iters") o->iters = std::atoi(next().c_str());
    else if (a == "--warmup") o->warmup = std::atoi(next().c_str());
    else if (a == "--dtypes") o->dtypes = next();
    else if (a == "--threads") o->threads = std::atoi(next().c_str());
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return false;
    }
  }
  return true;
}

at::ScalarType ParseDtype(const std::string& s) {
  if (s == "fp32") return at::kFloat;
  if (s == "fp16") return at::kHalf;
  return at::kBFloat16;
}

// A step: forward + backward; returns a tensor to synchronise on.
using Step = std::function<at::Tensor()>;

double MedianMs(const Step& step, const at::Device& device, int warmup, int iters) {
  auto sync = [&](const at::Tensor& t) {
    if (device.is_cuda()) torch::cuda::synchronize();
    else (void)t;
  };
  for (int i = 0; i < warmup; ++i) sync(step());
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    sync(step());
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Backward of L = sum(y * gy) for the params and x; grads are cleared between steps.
Step MakeStep(const std::function<at::Tensor(const at::Tensor&)>& forward, const at::Tensor& x,
              const at::Tensor& gy, std::vector<at::Tensor> params) {
  return [=]() mutable {
    for (at::Tensor& p : params) p.mutable_grad() = at::Tensor();
    x.mutable_grad() = at::Tensor();
    at::Tensor y = forward(x);
    y.backward(gy);
    return x.grad();
  };
}

// 1-minute load average (Linux), to judge how noisy CPU timings on a shared host are.
double LoadAverage() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!ParseArgs(argc, argv, &opt)) return 2;
  const bool cuda = opt.device == "cuda" || (opt.device == "auto" && torch::cuda::is_available());
  const at::Device device = cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const int threads = opt.threads > 0 ? opt.threads : static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(threads);
  const int64_t tokens = opt.tokens > 0 ? opt.tokens : (cuda ? 32 * 128 : 256);
  const int iters = opt.iters > 0 ? opt.iters : (cuda ? 20 : 3);
  std::string dtypes = opt.dtypes.empty() ? (cuda ? "bf16" : "fp32,bf16") : opt.dtypes;

  nlohmann::json out;
  out["bench"] = "quant_layer_forward_backward";
  out["device"] = cuda ? "cuda" : "cpu";
  out["torch_version"] = TORCH_VERSION;
  out["threads"] = at::get_num_threads();
  out["tokens"] = tokens;
  out["iters"] = iters;
  out["warmup"] = opt.warmup;
  out["load_average_start"] = LoadAverage();
  out["results"] = nlohmann::json::array();

  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1024, 3072}, {3072, 1024}};  // (in, out)
  for (absl::string_view piece : absl::StrSplit(dtypes, ',')) {
    const std::string dname(piece);
    const at::ScalarType dtype = ParseDtype(dname);
    const auto options = at::TensorOptions().dtype(dtype).device(device);
    for (auto [in, out_f] : shapes) {
      at::manual_seed(0);
      at::Tensor w = (at::randn({out_f, in}) * 0.02).to(options);
      at::Tensor x = at::randn({tokens, in}).to(options).requires_grad_(true);
      at::Tensor gy = at::randn({tokens, out_f}).to(options);

      std::vector<std::pair<std::string, Step>> steps;
      at::Tensor plain_w = w.clone().requires_grad_(true);
      steps.emplace_back("plain", MakeStep([plain_w](const at::Tensor& v) { return at::linear(v, plain_w); }, x, gy,
                                           {plain_w}));

      LayerQuantSpec v1spec{16, 32, 4, false};
      auto v1s = QuantLinearV1::Create(w, at::Tensor(), v1spec).value();
      v1s->SetTrainable(false, true);
      steps.emplace_back("v1_q4_g32_r4_scales", MakeStep([v1s](const at::Tensor& v) { return v1s->forward(v); }, x,
                                                         gy, {v1s->scale_A, v1s->scale_B}));
      auto v1w = QuantLinearV1::Create(w, at::Tensor(), v1spec).value();
      v1w->SetTrainable(true, false);
      steps.emplace_back("v1_q4_g32_r4_weights",
                         MakeStep([v1w](const at::Tensor& v) { return v1w->forward(v); }, x, gy, {v1w->weight}));

      LayerQuantSpecV2 v2spec;
      v2spec.lut_size = 4;
      v2spec.scale_rank = 32;
      v2spec.group_size = 32;
      v2spec.force_positive_scales = false;
      v2spec.magnitude_activation = MagnitudeActivation::kIdentity;
      v2spec.use_ste_fp16 = true;
      auto v2 = QuantLinearV2::Create(w, at::Tensor(), v2spec).value();
      v2->FreezeQ();
      v2->SetTrainable(true, false);
      std::vector<at::Tensor> v2params = {v2->scale_A, v2->scale_B, v2->rank_magnitude};
      steps.emplace_back("v2_q2_r32_ste", MakeStep([v2](const at::Tensor& v) { return v2->forward(v); }, x, gy,
                                                   v2params));
      auto v2d = QuantLinearV2::Create(w, at::Tensor(), v2spec).value();
      v2d->set_use_ste_fp16(false);
      v2d->FreezeQ();
      v2d->SetTrainable(true, false);
      steps.emplace_back("v2_q2_r32_dense", MakeStep([v2d](const at::Tensor& v) { return v2d->forward(v); }, x, gy,
                                                     {v2d->scale_A, v2d->scale_B, v2d->rank_magnitude}));
      auto v2t = QuantLinearV2::Create(w, at::Tensor(), v2spec).value();
      v2t->set_forward_path(qatd::quant::V2ForwardPath::kDenseSte);
      v2t->FreezeQ();
      v2t->SetTrainable(true, false);
      steps.emplace_back("v2_q2_r32_dense_ste", MakeStep([v2t](const at::Tensor& v) { return v2t->forward(v); }, x,
                                                         gy, {v2t->scale_A, v2t->scale_B, v2t->rank_magnitude}));

      double plain_ms = 0, plain_graph_ms = 0;
      for (auto& [name, step] : steps) {
        double ms = MedianMs(step, device, opt.warmup, iters);
        if (name == "plain") plain_ms = ms;
        nlohmann::json r;
        r["shape"] = std::to_string(in) + "->" + std::to_string(out_f);
        r["dtype"] = dname;
        r["variant"] = name;
        r["ms"] = ms;
        r["ratio_vs_plain"] = plain_ms > 0 ? ms / plain_ms : 1.0;
        double graph_ms = 0;
        std::string graph_text;
        // The factored STE path allocates [tokens, rank, in] tensors: not worth a graph pool.
        if (cuda && name != "v2_q2_r32_ste" && qatd::cuda::MedianGraphReplayMs([&] { step(); }, iters, &graph_ms)) {
          if (name == "plain") plain_graph_ms = graph_ms;
          r["graph_ms"] = graph_ms;
          r["graph_ratio_vs_plain"] = plain_graph_ms > 0 ? graph_ms / plain_graph_ms : 1.0;
          char buf[96];
          std::snprintf(buf, sizeof buf, "   graph %7.3f ms  x%.2f", graph_ms, r["graph_ratio_vs_plain"].get<double>());
          graph_text = buf;
        }
        out["results"].push_back(r);
        std::fprintf(stderr, "%s %s %-22s %9.2f ms  x%.2f%s\n", r["shape"].get<std::string>().c_str(), dname.c_str(),
                     name.c_str(), ms, r["ratio_vs_plain"].get<double>(), graph_text.c_str());
      }
    }
  }
  out["load_average_end"] = LoadAverage();
  std::printf("%s\n", out.dump(1).c_str());
  return 0;
}

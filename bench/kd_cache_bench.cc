// KD cache throughput: a randomly initialised Qwen3 teacher (default: the real Qwen3-0.6B
// shape from tests/data/golden/qwen3-0.6b/config.json), synthetic token ids, the real
// TeacherPipeline (chunked top-K, pinned double-buffered copies on CUDA) and the real
// KdCacheWriter (writer thread, atomic shards) into a temp directory.
//
// Prints one JSON object: teacher-only tokens/s (forward + top-K + device->host), end-to-end
// tokens/s (until the last shard and progress.json are durable), bytes per sequence.
//
//   kd_cache_bench [--batch 32] [--num-seqs 1024] [--max-length 128] [--topk 64]
//                  [--rand-neg 0] [--dtype bf16] [--device auto] [--num-layers N]

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include <dirent.h>
#include <sys/stat.h>


#include <ATen/record_function.h>
#include <torch/version.h>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/autograd/profiler_kineto.h>
#define QATD_BENCH_PROFILER 1
#endif
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/cuda/fused_ops.h"
#include "core/kd/cache_writer.h"
#include "core/kd/teacher.h"
#include "core/model/model_io.h"
#include "core/model/qwen3_config.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Removes a flat directory (the cache has no sub-folders). POSIX calls on purpose: with the
// pip LibTorch 2.11 on the GPU hosts, std::filesystem::remove_all binds to libtorch.so's
// own copy and crashes.
void RemoveFlatDir(const std::string& dir) {
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") ::unlink((dir + "/" + name).c_str());
    }
    ::closedir(d);
  }
  ::rmdir(dir.c_str());
}

// Sum of the sizes and number of the *.safetensors files in `dir`.
std::pair<uint64_t, int64_t> ShardBytes(const std::string& dir) {
  uint64_t bytes = 0;
  int64_t count = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      struct stat st {};
      if (name.size() > 12 && name.substr(name.size() - 12) == ".safetensors" &&
          ::stat((dir + "/" + name).c_str(), &st) == 0) {
        bytes += static_cast<uint64_t>(st.st_size);
        ++count;
      }
    }
    ::closedir(d);
  }
  return {bytes, count};
}

int Die(const absl::Status& s) {
  std::fprintf(stderr, "kd_cache_bench: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  qatd::cuda::SetAllocatorDefaults();  // before any CUDA allocation
  std::string config_path = QATD_BENCH_CONFIG;
  int64_t batch = 32, num_seqs = 1024, max_length = 128, topk = 64, rand_neg = 0, shard_size = 512;
  int64_t chunk_rows = 2048, warmup = 2, num_layers = 0, topk_block = 0;
  std::string dtype_name = "bf16", device_name = "auto", out_dir;
  CLI::App app{"KD cache throughput benchmark (JSON on stdout)"};
  app.option_defaults()->always_capture_default();
  app.add_option("--config", config_path, "Teacher config.json (random weights)");
  app.add_option("--num-layers", num_layers, "Override the number of decoder layers (0 = keep)");
  app.add_option("--batch", batch, "Sequences per teacher forward");
  app.add_option("--num-seqs", num_seqs, "Sequences to compute (and write)");
  app.add_option("--max-length", max_length, "L");
  app.add_option("--topk", topk, "K");
  app.add_option("--rand-neg", rand_neg, "R");
  app.add_option("--shard-size", shard_size, "Sequences per shard");
  app.add_option("--chunk-rows", chunk_rows, "Rows of full-vocabulary logits at a time");
  app.add_option("--topk-block", topk_block, "Top-K block-max prefilter width (0 = auto, 1 = plain top-K)");
  app.add_option("--warmup", warmup, "Warm-up batches (not timed)");
  app.add_option("--dtype", dtype_name, "bf16, fp16 or fp32")->check(CLI::IsMember({"bf16", "fp16", "fp32"}));
  app.add_option("--device", device_name, "auto, cpu or cuda");
  app.add_option("--out-dir", out_dir, "Where to write the cache (default: a temp dir, removed)");
  std::string profile_path;
  app.add_option("--profile", profile_path,
                 "LibTorch 2.x: also write one eager teacher batch as a Chrome trace to this file "
                 "(phases phase_forward and phase_topk; scripts/gpu/trace_summary.py summarises it)");
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));

  auto config = qatd::model::Qwen3Config::FromFile(config_path);
  if (!config.ok()) return Die(config.status());
  if (num_layers > 0) config->num_hidden_layers = num_layers;
  const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : dtype_name == "fp16" ? at::kHalf : at::kFloat;
  const bool cuda = device_name == "cuda" || (device_name == "auto" && at::hasCUDA());
  const at::Device device = cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  qatd::model::InitOptions init;
  init.seed = 0;
  init.dtype = dtype;
  init.device = device;
  std::fprintf(stderr, "[kd_cache_bench] init %lld-layer teacher on %s\n",
               static_cast<long long>(config->num_hidden_layers), device.str().c_str());
  auto model = qatd::model::InitTinyQwen3(*config, init);
  if (!model.ok()) return Die(model.status());
  (*model)->eval();

  // Synthetic ids, uniform over the vocabulary.
  std::mt19937_64 rng(1);
  std::vector<int32_t> ids(static_cast<size_t>(num_seqs * max_length));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(config->vocab_size));

  qatd::kd::TeacherOptions to;
  to.top_k = topk;
  to.rand_neg = rand_neg;
  to.chunk_rows = chunk_rows;
  to.topk_block = topk_block;
  qatd::kd::TeacherPipeline pipe(*model, to, max_length);
  auto sync = [&]() {
    if (cuda) at::empty({1}, at::TensorOptions().device(device)).cpu();  // a blocking round trip
  };

  // Runs all batches; `sink` sees every finished batch. Returns seconds.
  auto run = [&](int64_t n_batches_limit, const std::function<absl::Status(const qatd::kd::TeacherHostBatch&)>& sink,
                 double* secs) -> absl::Status {
    sync();
    const auto t0 = Clock::now();
    int64_t pos = 0, batches = 0;
    while (pos < num_seqs && (n_batches_limit <= 0 || batches < n_batches_limit)) {
      const int64_t shard_end = (pos / shard_size + 1) * shard_size;
      const int64_t n = std::min({batch, num_seqs - pos, shard_end - pos});
      auto done = pipe.Submit(ids.data() + pos * max_length, n, pos);
      if (!done.ok()) return done.status();
      if (done->has_value()) {
        absl::Status s = sink(**done);
        if (!s.ok()) return s;
      }
      pos += n;
      ++batches;
    }
    auto last = pipe.Drain();
    if (!last.ok()) return last.status();
    if (last->has_value()) {
      absl::Status s = sink(**last);
      if (!s.ok()) return s;
    }
    *secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return absl::OkStatus();
  };

  std::fprintf(stderr, "[kd_cache_bench] warm-up\n");
  double secs = 0;
  absl::Status s = run(warmup, [](const qatd::kd::TeacherHostBatch&) { return absl::OkStatus(); }, &secs);
  if (!s.ok()) return Die(s);

  std::fprintf(stderr, "[kd_cache_bench] teacher only\n");
  double teacher_secs = 0;
  int64_t checksum = 0;
  std::vector<qatd::kd::TeacherHostBatch> kept;  // the first batches, to check afterwards
  s = run(0,
          [&](const qatd::kd::TeacherHostBatch& b) {
            checksum += b.topk_idx.data_ptr<int32_t>()[0];
            if (kept.size() < 3) {
              qatd::kd::TeacherHostBatch c = b;
              c.input_ids = b.input_ids.clone();
              c.topk_idx = b.topk_idx.clone();
              c.topk_logits = b.topk_logits.clone();
              if (b.rand_idx.defined()) c.rand_idx = b.rand_idx.clone();
              kept.push_back(c);
            }
            return absl::OkStatus();
          },
          &teacher_secs);
  if (!s.ok()) return Die(s);

  // The pipelined results (double buffers, side-stream copies) must equal a plain
  // synchronous computation of the same batches.
  int64_t checked_equal = 0;
  {
    torch::NoGradGuard no_grad;
    for (const auto& b : kept) {
      const at::Tensor expect_ids = at::from_blob(ids.data() + b.first_sequence * max_length, {b.n, max_length},
                                                  at::TensorOptions().dtype(at::kInt));
      const qatd::kd::TeacherTopK t = qatd::kd::TopKFromHidden(
          (*model)->Forward(expect_ids.to(device)), [&](const at::Tensor& x) { return (*model)->Logits(x); }, to,
          b.first_sequence);
      if (at::equal(b.input_ids, expect_ids) && at::equal(b.topk_idx, t.topk_idx.cpu()) &&
          at::equal(b.topk_logits, t.topk_logits.cpu()) &&
          (!b.rand_idx.defined() || at::equal(b.rand_idx, t.rand_idx.cpu()))) {
        ++checked_equal;
      }
    }
  }

  // Forward only (no lm_head, no top-K): what the model itself costs.
  double forward_secs = 0;
  {
    torch::NoGradGuard no_grad;
    sync();
    const auto f0 = Clock::now();
    for (int64_t pos = 0; pos < num_seqs; pos += batch) {
      const int64_t n = std::min(batch, num_seqs - pos);
      const at::Tensor x = at::from_blob(ids.data() + pos * max_length, {n, max_length},
                                         at::TensorOptions().dtype(at::kInt));
      (void)(*model)->Forward(x.to(device));
    }
    sync();
    forward_secs = std::chrono::duration<double>(Clock::now() - f0).count();
  }

#ifdef QATD_BENCH_PROFILER
  if (!profile_path.empty()) {
    namespace tpi = torch::profiler::impl;
    const tpi::ProfilerConfig config(tpi::ProfilerState::KINETO);
    const std::set<tpi::ActivityType> activities{tpi::ActivityType::CPU, tpi::ActivityType::CUDA};
    torch::NoGradGuard no_grad;
    const at::Tensor x = at::from_blob(ids.data(), {batch, max_length}, at::TensorOptions().dtype(at::kInt)).to(device);
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
    at::Tensor hidden;
    {
      RECORD_USER_SCOPE("phase_forward");
      hidden = (*model)->Forward(x);
    }
    {
      RECORD_USER_SCOPE("phase_topk");
      (void)qatd::kd::TopKFromHidden(hidden, [&](const at::Tensor& h) { return (*model)->Logits(h); }, to, 0);
    }
    sync();
    torch::autograd::profiler::disableProfiler()->save(profile_path);
  }
#endif

  std::fprintf(stderr, "[kd_cache_bench] end to end\n");
  const bool temp_dir = out_dir.empty();
  if (temp_dir) {
    out_dir = (fs::temp_directory_path() / ("kd_cache_bench." + std::to_string(::getpid()))).string();
  }
  RemoveFlatDir(out_dir);
  ::mkdir(out_dir.c_str(), 0755);
  qatd::kd::KdCacheWriter::Options wo;
  wo.dir = out_dir;
  wo.layout = {max_length, topk, rand_neg, shard_size};
  auto writer = qatd::kd::KdCacheWriter::Open(wo, qatd::kd::KdProgress{});
  if (!writer.ok()) return Die(writer.status());
  double e2e_secs = 0;
  const auto t0 = Clock::now();
  s = run(0, [&](const qatd::kd::TeacherHostBatch& b) { return (*writer)->Append(b.rows()); }, &e2e_secs);
  if (s.ok()) s = (*writer)->Finish();
  if (!s.ok()) return Die(s);
  e2e_secs = std::chrono::duration<double>(Clock::now() - t0).count();

  const auto [shard_bytes, shards] = ShardBytes(out_dir);
  if (temp_dir) RemoveFlatDir(out_dir);

  const double tokens = static_cast<double>(num_seqs * max_length);
  nlohmann::json j = {
      {"bench", "kd_cache"},
      {"device", cuda ? "cuda" : "cpu"},
      {"cpu_threads", at::get_num_threads()},
      {"libtorch", TORCH_VERSION},
      {"config", config_path},
      {"num_layers", config->num_hidden_layers},
      {"hidden_size", config->hidden_size},
      {"vocab_size", config->vocab_size},
      {"dtype", dtype_name},
      {"batch", batch},
      {"max_length", max_length},
      {"topk", topk},
      {"rand_neg", rand_neg},
      {"chunk_rows", chunk_rows},
      {"shard_size", shard_size},
      {"num_seqs", num_seqs},
      {"shards", shards},
      {"teacher_tokens_per_s", tokens / teacher_secs},
      {"end_to_end_tokens_per_s", tokens / e2e_secs},
      {"teacher_seconds", teacher_secs},
      {"forward_only_tokens_per_s", tokens / forward_secs},
      {"topk_block", qatd::kd::ResolveTopKBlock(topk_block, config->vocab_size, topk)},
      {"end_to_end_seconds", e2e_secs},
      {"bytes_per_sequence", static_cast<double>(shard_bytes) / static_cast<double>(num_seqs)},
      {"checksum", checksum},
      {"pipeline_batches_checked", static_cast<int64_t>(kept.size())},
      {"pipeline_batches_equal_to_direct", checked_equal},
      {"teacher_graph_replays", pipe.graph_replays()}};
  std::printf("%s\n", j.dump(2).c_str());
  std::fflush(stdout);
  return 0;
}

#pragma once
// Shared by the trainer and job tests: a recording Reporter, a per-process scratch directory,
// and a tiny *peaked* teacher with a KD cache of it.

#include <gtest/gtest.h>

#include <cmath>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/jobs/kd_cache_job.h"
#include "core/common/reporter.h"
#include "core/model/model_io.h"
#include "tests/common/temp_dir.h"

namespace qatd::train {

inline const std::string kData = QATD_TEST_DATA;
inline const std::string kTokenizer = kData + "/golden/qwen3-tokenizer";

class QuietReporter : public jobs::Reporter {
 public:
  void Progress(int64_t done, int64_t total, const std::string&, double, double) override { last_done = done; }
  void Metric(const std::string& name, int64_t step, double value) override {
    std::lock_guard<std::mutex> l(mu_);
    metrics.emplace_back(name, step, value);
  }
  void Log(jobs::LogLevel, const std::string& m) override {
    std::lock_guard<std::mutex> l(mu_);
    logs.push_back(m);
  }
  void Artifact(const std::string& path, const std::string& kind) override {
    std::lock_guard<std::mutex> l(mu_);
    artifacts.emplace_back(kind, path);
  }
  void Text(const std::string& text, int32_t) override {
    std::lock_guard<std::mutex> l(mu_);
    this->text += text;
  }
  // The last value of a metric, or NaN.
  double Last(const std::string& name) const {
    double v = std::nan("");
    for (const auto& [n, step, value] : metrics) {
      if (n == name) v = value;
    }
    return v;
  }
  std::string ArtifactOf(const std::string& kind) const {
    for (const auto& [k, path] : artifacts) {
      if (k == kind) return path;
    }
    return "";
  }
  std::string text;
  int64_t last_done = 0;
  std::vector<std::tuple<std::string, int64_t, double>> metrics;
  std::vector<std::string> logs;
  std::vector<std::pair<std::string, std::string>> artifacts;

 private:
  std::mutex mu_;
};

inline qatd::testing::TempDir& Scratch() {
  static qatd::testing::TempDir dir;
  return dir;
}

// A tiny Qwen3 (tiny-qwen3's shape, real vocabulary) whose weights are drawn with a large
// initializer range, so its next-token distributions are peaked (a 0.02 init is nearly
// uniform and makes every KD loss ~0), and a KD cache of it on the alpaca test records.
struct Fixture {
  std::string teacher;
  std::string cache;
};

// The fixture's KD cache job: 72 alpaca sequences of 24 tokens, top-16, on the CPU in fp32.
inline jobs::KdCacheOptions TinyCacheOptions(const std::string& teacher, const std::string& output_dir) {
  jobs::KdCacheOptions o;
  o.teacher_model = teacher;
  o.tokenizer = kTokenizer;
  o.dataset = kData + "/kd/job_alpaca.json";
  o.dataset_format = kd::DatasetFormat::kAlpacaChat;
  o.enable_thinking = kd::ThinkingMode::kBoth;
  o.max_length = 24;
  o.topk = 16;
  o.num_sequences = 72;
  o.batch_size = 8;
  o.shard_size = 32;
  o.device = "cpu";
  o.dtype = jobs::Dtype::kFp32;
  o.output_dir = output_dir;
  return o;
}

inline const Fixture& Teacher() {
  static const Fixture f = [] {
    Fixture out;
    out.teacher = Scratch().File("teacher");
    out.cache = Scratch().File("cache");
    auto config = model::Qwen3Config::FromFile(kData + "/golden/tiny-qwen3/config.json");
    EXPECT_TRUE(config.ok()) << config.status();
    model::InitOptions init;
    init.seed = 7;
    init.initializer_range = 0.25;
    auto m = model::InitTinyQwen3(*config, init);
    EXPECT_TRUE(m.ok()) << m.status();
    model::SaveOptions save;
    save.dtype = at::kFloat;
    EXPECT_TRUE(model::SaveQwen3(*m, *config, out.teacher, save).ok());
    const jobs::KdCacheOptions o = TinyCacheOptions(out.teacher, out.cache);
    QuietReporter rep;
    jobs::CancelToken cancel;
    absl::Status s = jobs::RunKdCache(o, rep, cancel);
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }();
  return f;
}


}  // namespace qatd::train

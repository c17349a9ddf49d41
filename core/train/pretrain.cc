#include "core/train/pretrain.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numbers>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/kd/packing.h"
#include "core/kd/sample_stream.h"
#include "core/model/model_io.h"
#include "core/train/losses.h"
#include "nlohmann/json.hpp"

namespace qatd::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Files of an HF directory that belong to the tokenizer (copied when present; the first two
// are required).
constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                           "vocab.json", "merges.txt", "special_tokens_map.json"};

absl::StatusOr<at::Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) return absl::FailedPreconditionError("device: no CUDA device available");
    return at::Device(name);
  }
  return absl::InvalidArgumentError(absl::StrCat("device must be cpu, cuda or cuda:N, got '", name, "'"));
}

// lr at step s (0-based): linear warmup to `lr` over warmup_steps, then cosine down to
// lr * min_lr_ratio at the last step.
double LearningRate(const PretrainOptions& o, int64_t step) {
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const int64_t span = std::max<int64_t>(1, o.steps - o.warmup_steps - 1);
  const double t = std::min(1.0, static_cast<double>(step - o.warmup_steps) / static_cast<double>(span));
  const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * t));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

// The output projection W [V, H]: the tied embedding or lm_head's weight parameter.
at::Tensor OutputWeight(model::Qwen3Model& m) {
  if (m->tied()) return m->model->embed_tokens->weight;
  for (auto& p : m->lm_head->named_parameters(/*recurse=*/false))
    if (p.key() == "weight") return p.value();
  TORCH_CHECK(false, "lm_head has no 'weight' parameter");
}

// Sampled-softmax cross-entropy (file comment of pretrain.h). h: [N, H] fp32, targets: [N]
// indices into `active`, active: [A] ids, inactive: [I] ids.
at::Tensor SampledCrossEntropy(const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets,
                               const at::Tensor& active, const at::Tensor& inactive, int64_t samples,
                               at::Generator& gen) {
  at::Tensor cols = active;
  at::Tensor logits;
  if (inactive.numel() > 0 && samples > 0) {
    at::Tensor pick = at::randint(inactive.numel(), {samples}, gen, at::TensorOptions().dtype(at::kLong));
    cols = at::cat({active, inactive.index_select(0, pick.to(inactive.device()))});
    logits = h.matmul(w.index_select(0, cols).t());  // [N, A + R]
    at::Tensor log_weight = at::zeros({cols.numel()}, h.options());
    log_weight.slice(0, active.numel()).fill_(std::log(static_cast<double>(inactive.numel()) / samples));
    at::Tensor lse = (logits + log_weight).logsumexp(-1);
    return (lse - logits.gather(1, targets.unsqueeze(1)).squeeze(1)).mean();
  }
  logits = h.matmul(w.index_select(0, cols).t());
  return (logits.logsumexp(-1) - logits.gather(1, targets.unsqueeze(1)).squeeze(1)).mean();
}

json StatsJson(const NextTokenStats& s) {
  return {{"positions", s.positions}, {"cross_entropy", s.cross_entropy}, {"entropy", s.entropy},
          {"top1_prob", s.top1_prob}, {"top1_accuracy", s.top1_accuracy}};
}

std::string StatsLine(const NextTokenStats& s) {
  return absl::StrFormat("cross_entropy %.4f, entropy %.4f nats, top1_prob %.4f, top1_accuracy %.4f (%d positions)",
                         s.cross_entropy, s.entropy, s.top1_prob, s.top1_accuracy, s.positions);
}

absl::Status CopyFile(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::InternalError(absl::StrCat("copying ", from.string(), " to ", to.string(), ": ", ec.message()));
  return absl::OkStatus();
}

// Moves the finished `tmp` directory to `dest` (replacing an old one when `overwrite`).
absl::Status InstallDirectory(const std::string& tmp, const std::string& dest, bool overwrite) {
  std::error_code ec;
  std::string old;
  if (fs::exists(dest, ec)) {
    if (!overwrite) return absl::AlreadyExistsError(absl::StrCat("output_dir ", dest, " already exists"));
    old = absl::StrCat(dest, ".old-", ::getpid());
    QATD_RETURN_IF_ERROR(RemoveTree(old));
    if (std::rename(dest.c_str(), old.c_str()) != 0)
      return absl::InternalError(absl::StrCat("renaming ", dest, " to ", old, ": ", std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), dest.c_str()) != 0)
    return absl::InternalError(absl::StrCat("renaming ", tmp, " to ", dest, ": ", std::strerror(errno)));
  if (!old.empty()) return RemoveTree(old);
  return absl::OkStatus();
}

// Appends every tokenizer file of `model_dir` to `dir`.
absl::Status CopyTokenizerFiles(const std::string& model_dir, const std::string& dir) {
  for (const char* f : kTokenizerFiles) {
    fs::path from = fs::path(model_dir) / f;
    std::error_code ec;
    if (!fs::exists(from, ec)) continue;
    QATD_RETURN_IF_ERROR(CopyFile(from, fs::path(dir) / f));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PretrainOptions::Validate() const {
  auto bad = [](const std::string& msg) { return absl::InvalidArgumentError(msg); };
  if (model_dir.empty()) return bad("model_dir is required");
  if (output_dir.empty()) return bad("output_dir is required");
  if (dataset.empty()) return bad("dataset is required");
  QATD_RETURN_IF_ERROR(kd::ParseDatasetFormat(format).status());
  QATD_RETURN_IF_ERROR(kd::ParseThinkingMode(thinking).status());
  QATD_RETURN_IF_ERROR(kd::ParseTextUnit(text_unit).status());
  if (!(holdout_fraction >= 0 && holdout_fraction <= 0.5))
    return bad(absl::StrCat("holdout_fraction must be in [0, 0.5], got ", holdout_fraction));
  if (eval_blocks < 0) return bad(absl::StrCat("eval_blocks must be >= 0, got ", eval_blocks));
  if (eval_every < 0) return bad(absl::StrCat("eval_every must be >= 0, got ", eval_every));
  if (seq_len < 2 || seq_len > 1048576) return bad(absl::StrCat("seq_len must be in [2, 1048576], got ", seq_len));
  if (batch_size < 1 || batch_size > 65536)
    return bad(absl::StrCat("batch_size must be in [1, 65536], got ", batch_size));
  if (steps < 1 || steps > 100000000) return bad(absl::StrCat("steps must be in [1, 1e8], got ", steps));
  if (!(lr > 0 && std::isfinite(lr))) return bad(absl::StrCat("lr must be a finite number > 0, got ", lr));
  if (warmup_steps < 0) return bad(absl::StrCat("warmup_steps must be >= 0, got ", warmup_steps));
  if (!(min_lr_ratio >= 0 && min_lr_ratio <= 1))
    return bad(absl::StrCat("min_lr_ratio must be in [0, 1], got ", min_lr_ratio));
  if (!(weight_decay >= 0 && std::isfinite(weight_decay)))
    return bad(absl::StrCat("weight_decay must be a finite number >= 0, got ", weight_decay));
  if (!(grad_clip >= 0 && std::isfinite(grad_clip)))
    return bad(absl::StrCat("grad_clip must be a finite number >= 0, got ", grad_clip));
  if (vocab_sample < 0) return bad(absl::StrCat("vocab_sample must be >= 0, got ", vocab_sample));
  if (threads < 0 || threads > 1024) return bad(absl::StrCat("threads must be in [0, 1024], got ", threads));
  if (!save_dtype.empty()) QATD_RETURN_IF_ERROR(model::ParseTorchDtype(save_dtype).status());
  if (device != "cpu" && device.rfind("cuda", 0) != 0)
    return bad(absl::StrCat("device must be cpu, cuda or cuda:N, got '", device, "'"));
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> PackBlocks(const kd::Dataset& dataset, const model::Tokenizer& tokenizer,
                                      const kd::RenderOptions& render, int64_t seq_len, int32_t eos_id,
                                      uint64_t seed, int64_t max_blocks) {
  if (seq_len < 1) return absl::InvalidArgumentError(absl::StrCat("seq_len must be >= 1, got ", seq_len));
  kd::SampleStreamOptions so;
  so.render = render;
  so.block_length = seq_len;
  so.eos_id = eos_id;
  so.seed = seed;
  so.shuffle = true;
  so.num_threads = 1;
  kd::PackedSequenceStream stream(
      dataset, [&tokenizer](const std::string& text) { return tokenizer.Encode(text); }, so);
  std::vector<int32_t> ids;
  std::vector<int32_t> block(static_cast<size_t>(seq_len));
  int64_t n = 0;
  while (n < max_blocks) {
    QATD_ASSIGN_OR_RETURN(bool more, stream.Next(block.data()));
    if (!more) break;
    ids.insert(ids.end(), block.begin(), block.end());
    ++n;
  }
  return CatchTorchOr<at::Tensor>("packing", [&]() -> absl::StatusOr<at::Tensor> {
    return at::tensor(ids, at::kInt).to(at::kLong).reshape({n, seq_len});
  });
}

absl::StatusOr<NextTokenStats> MeasureNextToken(model::Qwen3Model& model, const at::Tensor& blocks,
                                                int64_t batch_size) {
  if (blocks.dim() != 2 || blocks.size(1) < 2)
    return absl::InvalidArgumentError("blocks must be [N, L] with L >= 2");
  if (batch_size < 1) return absl::InvalidArgumentError(absl::StrCat("batch_size must be >= 1, got ", batch_size));
  NextTokenStats out;
  if (blocks.size(0) == 0) return out;
  return CatchTorchOr<NextTokenStats>("measuring next-token statistics", [&]() -> absl::StatusOr<NextTokenStats> {
    const int64_t vocab = model->config().vocab_size;
    if (blocks.min().item<int64_t>() < 0 || blocks.max().item<int64_t>() >= vocab)
      return absl::InvalidArgumentError(absl::StrCat("blocks hold ids outside [0, ", vocab, ")"));
    torch::NoGradGuard no_grad;
    const bool was_training = model->is_training();
    model->eval();
    double ce = 0, ent = 0, top1 = 0, acc = 0;
    int64_t n = 0;
    for (int64_t b = 0; b < blocks.size(0); b += batch_size) {
      at::Tensor ids = blocks.slice(0, b, std::min(b + batch_size, blocks.size(0))).to(at::kLong).to(model->device());
      at::Tensor logits = model->ForwardLogits(ids).slice(1, 0, -1).to(at::kFloat);  // [b, L-1, V]
      at::Tensor target = ids.slice(1, 1);                                            // [b, L-1]
      at::Tensor logp = logits.log_softmax(-1);
      at::Tensor p = logp.exp();
      ce -= logp.gather(-1, target.unsqueeze(-1)).sum().item<double>();
      ent -= (p * logp).sum().item<double>();
      auto [pmax, argmax] = p.max(-1);
      top1 += pmax.sum().item<double>();
      acc += argmax.eq(target).sum().item<double>();
      n += target.numel();
    }
    if (was_training) model->train();
    out.positions = n;
    out.cross_entropy = ce / n;
    out.entropy = ent / n;
    out.top1_prob = top1 / n;
    out.top1_accuracy = acc / n;
    return out;
  });
}

absl::Status Pretrain(const PretrainOptions& o, jobs::Reporter& reporter, jobs::CancelToken& cancel,
                      PretrainSummary* summary) {
  QATD_RETURN_IF_ERROR(o.Validate());
  std::error_code ec;
  if (fs::exists(o.output_dir, ec) && !o.overwrite)
    return absl::AlreadyExistsError(absl::StrCat("output_dir ", o.output_dir, " already exists (overwrite is off)"));
  QATD_ASSIGN_OR_RETURN(const kd::DatasetFormat format, kd::ParseDatasetFormat(o.format));
  QATD_ASSIGN_OR_RETURN(const kd::ThinkingMode thinking, kd::ParseThinkingMode(o.thinking));
  QATD_ASSIGN_OR_RETURN(const kd::TextUnit text_unit, kd::ParseTextUnit(o.text_unit));
  QATD_ASSIGN_OR_RETURN(const at::Device device, ParseDevice(o.device));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (!fs::exists(fs::path(o.model_dir) / f, ec))
      return absl::NotFoundError(absl::StrCat("model_dir ", o.model_dir, ": missing ", f));
  if (o.threads > 0) at::set_num_threads(o.threads);

  // 1. Data: read, split, pack.
  QATD_ASSIGN_OR_RETURN(kd::Dataset data, kd::ReadDataset({o.dataset, format, o.text_field, text_unit}));
  for (const kd::BadRecord& bad : data.bad_records)
    reporter.Log(jobs::LogLevel::kWarning, absl::StrCat("skipping bad record ", bad.location.ToString(), ": ", bad.reason));
  if (data.records.empty()) return absl::FailedPreconditionError(absl::StrCat("dataset ", o.dataset, " has no usable records"));
  QATD_ASSIGN_OR_RETURN(const model::Tokenizer tokenizer, model::Tokenizer::FromFile(o.model_dir));
  QATD_ASSIGN_OR_RETURN(model::Qwen3Config config, model::Qwen3Config::FromFile(o.model_dir));
  if (o.seq_len > config.max_position_embeddings)
    return absl::InvalidArgumentError(absl::StrCat("seq_len must be <= max_position_embeddings (",
                                                   config.max_position_embeddings, "), got ", o.seq_len));
  int64_t eos = tokenizer.eos_token_id().value_or(-1);
  if (eos < 0) eos = config.eos_token_id;
  if (eos < 0) return absl::FailedPreconditionError("no eos token: neither tokenizer_config.json nor config.json names one");

  const int64_t n_records = static_cast<int64_t>(data.records.size());
  int64_t n_heldout = 0;
  if (o.holdout_fraction > 0 && o.eval_blocks > 0 && n_records >= 2)
    n_heldout = std::clamp<int64_t>(std::llround(o.holdout_fraction * n_records), 1, n_records / 2);
  kd::Dataset train_data, heldout_data;
  {
    const std::vector<int64_t> perm = kd::SeededPermutation(n_records, kd::MixSeed(o.seed, 1));
    for (int64_t i = 0; i < n_records; ++i)
      (i < n_heldout ? heldout_data : train_data).records.push_back(data.records[static_cast<size_t>(perm[i])]);
  }
  const kd::RenderOptions render{format, thinking};
  QATD_ASSIGN_OR_RETURN(at::Tensor train_blocks,
                        PackBlocks(train_data, tokenizer, render, o.seq_len, static_cast<int32_t>(eos),
                                   kd::MixSeed(o.seed, 2), o.steps * o.batch_size));
  QATD_ASSIGN_OR_RETURN(at::Tensor eval_blocks, PackBlocks(heldout_data, tokenizer, render, o.seq_len,
                                                           static_cast<int32_t>(eos), kd::MixSeed(o.seed, 3),
                                                           o.eval_blocks));
  const int64_t n_blocks = train_blocks.size(0);
  if (n_blocks < o.batch_size)
    return absl::FailedPreconditionError(absl::StrCat("the training records pack into ", n_blocks, " blocks of ",
                                                      o.seq_len, " tokens, fewer than batch_size ", o.batch_size));
  if (train_blocks.max().item<int64_t>() >= config.vocab_size)
    return absl::FailedPreconditionError(absl::StrCat("the tokenizer produces ids >= the model's vocab_size ",
                                                      config.vocab_size));
  reporter.Log(jobs::LogLevel::kInfo,
               absl::StrCat("pretrain data: ", n_records - n_heldout, " training records -> ", n_blocks, " blocks of ",
                            o.seq_len, " tokens; ", n_heldout, " held-out records -> ", eval_blocks.size(0),
                            " evaluation blocks"));

  // 2. Model (fp32 for training), the active vocabulary.
  QATD_ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadQwen3(o.model_dir, {at::kFloat, device}));
  model::Qwen3Model m = loaded.model;
  PretrainSummary sum;
  sum.output_dir = o.output_dir;
  sum.train_records = n_records - n_heldout;
  sum.heldout_records = n_heldout;
  sum.train_blocks = n_blocks;
  sum.eval_blocks = eval_blocks.size(0);

  auto evaluate = [&](int64_t step) -> absl::StatusOr<NextTokenStats> {
    QATD_ASSIGN_OR_RETURN(NextTokenStats s, MeasureNextToken(m, eval_blocks));
    if (s.positions > 0) {
      reporter.Metric("pretrain/eval_cross_entropy", step, s.cross_entropy);
      reporter.Metric("pretrain/eval_entropy", step, s.entropy);
      reporter.Metric("pretrain/eval_top1_prob", step, s.top1_prob);
    }
    return s;
  };
  QATD_ASSIGN_OR_RETURN(sum.before, evaluate(0));
  if (sum.before.positions > 0) reporter.Log(jobs::LogLevel::kInfo, "held-out before: " + StatsLine(sum.before));

  std::vector<double> losses;
  absl::Status trained = CatchTorch("pretraining", [&]() -> absl::Status {
    m->train();
    const int64_t vocab = config.vocab_size;
    at::Tensor active = std::get<0>(at::_unique(train_blocks.flatten(), /*sorted=*/true));
    at::Tensor is_active = at::zeros({vocab}, at::kBool);
    is_active.index_fill_(0, active, true);
    at::Tensor inactive = is_active.logical_not().nonzero().squeeze(1);
    at::Tensor position = at::full({vocab}, -1, at::kLong);  // id -> index in `active`
    position.index_copy_(0, active, at::arange(active.numel(), at::kLong));
    sum.active_vocab = active.numel();
    const at::Tensor active_dev = active.to(device), inactive_dev = inactive.to(device);
    const at::Tensor position_dev = position.to(device);

    std::vector<at::Tensor> decay, no_decay;
    for (auto& p : m->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
    auto adamw = torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).eps(1e-8);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(adamw.weight_decay(o.weight_decay)));
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(adamw.weight_decay(0.0)));
    torch::optim::AdamW optimizer(std::move(groups), adamw);

    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(kd::MixSeed(o.seed, 4));
    std::vector<int64_t> order;
    int64_t cursor = n_blocks, epoch = 0;
    auto start = Clock::now();
    for (int64_t step = 0; step < o.steps; ++step) {
      if (cancel.cancelled()) return absl::CancelledError(absl::StrCat("pretraining cancelled at step ", step));
      // The batch: the next batch_size blocks of this epoch's permutation.
      std::vector<int64_t> picks;
      while (static_cast<int64_t>(picks.size()) < o.batch_size) {
        if (cursor >= n_blocks) {
          order = kd::SeededPermutation(n_blocks, kd::MixSeed(o.seed, 100 + epoch++));
          cursor = 0;
        }
        picks.push_back(order[static_cast<size_t>(cursor++)]);
      }
      at::Tensor ids = train_blocks.index_select(0, at::tensor(picks, at::kLong)).to(device);
      const double lr = LearningRate(o, step);
      for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);

      optimizer.zero_grad();
      at::Tensor hidden = m->Forward(ids);  // [B, L, H]
      at::Tensor w = OutputWeight(m);
      at::Tensor loss;
      if (o.vocab_sample == 0) {
        loss = HardFullLoss(hidden, w, ids.slice(1, 1).unsqueeze(-1), 1024);
      } else {
        at::Tensor h = hidden.slice(1, 0, -1).reshape({-1, hidden.size(-1)});
        at::Tensor targets = position_dev.index_select(0, ids.slice(1, 1).reshape(-1));
        loss = SampledCrossEntropy(h, w, targets, active_dev, inactive_dev, o.vocab_sample, gen);
      }
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value))
        return absl::InternalError(absl::StrCat("non-finite training loss at step ", step, "; nothing written"));
      loss.backward();
      if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(m->parameters(), o.grad_clip);
      optimizer.step();

      losses.push_back(loss_value);
      reporter.Metric("pretrain/loss", step + 1, loss_value);
      reporter.Metric("pretrain/lr", step + 1, lr);
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const double rate = (step + 1) / std::max(elapsed, 1e-9);
      reporter.Progress(step + 1, o.steps, "steps", rate, (o.steps - step - 1) / rate);
      if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && step + 1 < o.steps) {
        const auto eval_start = Clock::now();
        QATD_RETURN_IF_ERROR(evaluate(step + 1).status());
        m->train();
        // Evaluation time is not training time.
        const auto eval_time = Clock::now() - eval_start;
        start += std::chrono::duration_cast<Clock::duration>(eval_time);
      }
    }
    sum.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return absl::OkStatus();
  });
  QATD_RETURN_IF_ERROR(trained);
  sum.steps = o.steps;
  const size_t k = std::min<size_t>(10, losses.size());
  for (size_t i = 0; i < k; ++i) {
    sum.first_loss += losses[i] / k;
    sum.last_loss += losses[losses.size() - k + i] / k;
  }
  sum.tokens_per_second = static_cast<double>(o.steps * o.batch_size * o.seq_len) / std::max(sum.seconds, 1e-9);
  QATD_ASSIGN_OR_RETURN(sum.after, evaluate(o.steps));
  reporter.Log(jobs::LogLevel::kInfo,
               absl::StrFormat("pretrain: %d steps in %.1f s (%.0f tokens/s), loss %.4f -> %.4f", sum.steps,
                               sum.seconds, sum.tokens_per_second, sum.first_loss, sum.last_loss));
  if (sum.after.positions > 0) reporter.Log(jobs::LogLevel::kInfo, "held-out after: " + StatsLine(sum.after));

  // 3. Output: assemble next to output_dir, then rename into place.
  if (!o.save_dtype.empty()) config.torch_dtype = o.save_dtype;
  QATD_ASSIGN_OR_RETURN(const at::ScalarType save_dtype, model::ParseTorchDtype(config.torch_dtype));
  fs::path dest = fs::absolute(fs::path(o.output_dir), ec);
  if (ec) dest = fs::path(o.output_dir);
  fs::create_directories(dest.parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dest.parent_path().string(), ": ", ec.message()));
  const std::string tmp = absl::StrCat(dest.string(), ".tmp-", ::getpid());
  QATD_RETURN_IF_ERROR(RemoveTree(tmp));
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  absl::Status written = [&]() -> absl::Status {
    model::SaveOptions save;
    save.dtype = save_dtype;
    QATD_RETURN_IF_ERROR(model::SaveQwen3(m, config, tmp, save));
    QATD_RETURN_IF_ERROR(CopyTokenizerFiles(o.model_dir, tmp));
    json record = {
        {"source_model", o.model_dir},
        {"dataset", o.dataset},
        {"options",
         {{"format", o.format}, {"thinking", o.thinking}, {"seq_len", o.seq_len}, {"batch_size", o.batch_size},
          {"steps", o.steps}, {"lr", o.lr}, {"warmup_steps", o.warmup_steps}, {"min_lr_ratio", o.min_lr_ratio},
          {"weight_decay", o.weight_decay}, {"grad_clip", o.grad_clip}, {"vocab_sample", o.vocab_sample},
          {"holdout_fraction", o.holdout_fraction}, {"seed", o.seed}}},
        {"train_blocks", sum.train_blocks},
        {"active_vocab", sum.active_vocab},
        {"first_loss", sum.first_loss},
        {"last_loss", sum.last_loss},
        {"heldout_before", StatsJson(sum.before)},
        {"heldout_after", StatsJson(sum.after)}};
    std::ofstream out(fs::path(tmp) / "pretrain.json");
    out << record.dump(2) << "\n";
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("writing ", tmp, "/pretrain.json"));
    return InstallDirectory(tmp, dest.string(), o.overwrite);
  }();
  if (!written.ok()) {
    (void)RemoveTree(tmp);
    return written;
  }
  reporter.Artifact(dest.string(), "model");
  if (summary != nullptr) *summary = sum;
  return absl::OkStatus();
}

}  // namespace qatd::train

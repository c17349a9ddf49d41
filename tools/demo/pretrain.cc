#include "tools/demo/pretrain.h"

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
#include <optional>
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

// AdamW for a [V, H] matrix of which a step touches only some rows (the embedding / lm_head
// under the sampled softmax). Only the given rows' moments and values change ("lazy" Adam, as
// torch's SparseAdam); bias correction uses the global step. Decoupled weight decay applies to
// the updated rows. Rows touched every step (the active vocabulary) get exactly AdamW.
class RowAdamW {
 public:
  RowAdamW(const at::Tensor& param, double beta1, double beta2, double eps)
      : param_(param), m_(at::zeros_like(param)), v_(at::zeros_like(param)), beta1_(beta1), beta2_(beta2), eps_(eps) {}

  // rows: [U] distinct ids; grad: [U, H], the gradient of param[rows].
  void Step(const at::Tensor& rows, const at::Tensor& grad, double lr, double weight_decay, int64_t step) {
    torch::NoGradGuard no_grad;
    at::Tensor m = m_.index_select(0, rows).mul_(beta1_).add_(grad, 1 - beta1_);
    at::Tensor v = v_.index_select(0, rows).mul_(beta2_).addcmul_(grad, grad, 1 - beta2_);
    m_.index_copy_(0, rows, m);
    v_.index_copy_(0, rows, v);
    const double bc1 = 1 - std::pow(beta1_, static_cast<double>(step));
    const double bc2 = 1 - std::pow(beta2_, static_cast<double>(step));
    at::Tensor p = param_.index_select(0, rows);
    if (weight_decay > 0) p.mul_(1 - lr * weight_decay);
    p.addcdiv_(m, v.div(bc2).sqrt_().add_(eps_), -lr / bc1);
    param_.index_copy_(0, rows, p);
  }

 private:
  at::Tensor param_, m_, v_;
  double beta1_, beta2_, eps_;
};

constexpr double kBeta1 = 0.9, kBeta2 = 0.95, kAdamEps = 1e-8;

// Sampled-softmax cross-entropy (file comment of pretrain.h). h: [N, H]; w: [A + R, H], the
// output rows of the A active ids followed by R sampled inactive ones; targets: [N] indices
// < A; log_weight: log(inactive count / R) for the sampled rows.
at::Tensor SampledCrossEntropy(const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets, int64_t active,
                               double log_weight) {
  at::Tensor logits = h.matmul(w.t());  // [N, A + R]
  at::Tensor weighted = logits;
  if (logits.size(1) > active) {
    at::Tensor offset = at::zeros({logits.size(1)}, logits.options());
    offset.slice(0, active).fill_(log_weight);
    weighted = logits + offset;
  }
  return (weighted.logsumexp(-1) - logits.gather(1, targets.unsqueeze(1)).squeeze(1)).mean();
}

// Scales `grads` (defined tensors) so that their global L2 norm is at most max_norm.
void ClipGradients(const std::vector<at::Tensor>& grads, double max_norm) {
  torch::NoGradGuard no_grad;
  double sq = 0;
  for (const at::Tensor& g : grads)
    if (g.defined()) sq += g.pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  if (norm > max_norm)
    for (const at::Tensor& g : grads)
      if (g.defined()) g.mul_(max_norm / (norm + 1e-6));
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
  if (fs::exists(dest, ec) && !overwrite) {
    return absl::AlreadyExistsError(absl::StrCat("output_dir ", dest, " already exists"));
  }
  return ReplaceDirectory(tmp, dest);
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

namespace {

// Pretrain as a class: one method per step of the header's pipeline; the training state
// (optimizers, sampled-softmax tables, data order) in members.
class Pretrainer {
 public:
  Pretrainer(const PretrainOptions& o, jobs::Reporter& reporter, jobs::CancelToken& cancel)
      : o_(o), reporter_(reporter), cancel_(cancel) {}

  absl::Status Run(PretrainSummary* summary);

 private:
  absl::Status CheckInputs();
  absl::Status LoadData();
  absl::Status PackData(const kd::Dataset& data);
  absl::StatusOr<NextTokenStats> Evaluate(int64_t step);
  absl::Status Train();
  void SetUpVocabulary();
  void SetUpOptimizers();
  at::Tensor NextBatch();
  absl::StatusOr<double> Step(int64_t step);
  void Summarize();
  absl::Status WriteOutput();

  const PretrainOptions& o_;
  jobs::Reporter& reporter_;
  jobs::CancelToken& cancel_;

  // Inputs (CheckInputs, LoadData).
  kd::DatasetFormat format_{};
  kd::ThinkingMode thinking_{};
  kd::TextUnit text_unit_{};
  at::Device device_{at::kCPU};
  std::optional<model::Tokenizer> tokenizer_;
  model::Qwen3Config config_;
  int64_t eos_ = -1;
  at::Tensor train_blocks_, eval_blocks_;  // [N, seq_len] int64, CPU
  int64_t n_blocks_ = 0;
  model::Qwen3Model m_{nullptr};
  PretrainSummary sum_;
  std::vector<double> losses_;

  // The sampled softmax (pretrain.h): active ids, the others, and the blocks as active indices.
  at::Tensor active_, inactive_, local_blocks_, active_dev_;
  int64_t n_active_ = 0, n_inactive_ = 0, n_sample_ = 0;
  bool sampled_ = false;
  double log_weight_ = 0;
  at::Generator gen_;

  // Optimizers: RowAdamW for the embedding (and an untied lm_head) under the sampled softmax.
  at::Tensor embed_, out_w_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<RowAdamW> embed_opt_, out_opt_;

  // Data order: epoch after epoch of seeded permutations of the blocks.
  std::vector<int64_t> order_;
  int64_t cursor_ = 0, epoch_ = 0;
};

absl::Status Pretrainer::Run(PretrainSummary* summary) {
  QATD_RETURN_IF_ERROR(CheckInputs());
  QATD_RETURN_IF_ERROR(LoadData());
  // 2. Model (fp32 for training).
  QATD_ASSIGN_OR_RETURN(model::LoadedModel loaded, model::LoadQwen3(o_.model_dir, {at::kFloat, device_}));
  m_ = loaded.model;
  sum_.output_dir = o_.output_dir;
  QATD_ASSIGN_OR_RETURN(sum_.before, Evaluate(0));
  if (sum_.before.positions > 0) reporter_.Log(jobs::LogLevel::kInfo, "held-out before: " + StatsLine(sum_.before));
  QATD_RETURN_IF_ERROR(CatchTorch("pretraining", [&]() -> absl::Status { return Train(); }));
  Summarize();
  QATD_ASSIGN_OR_RETURN(sum_.after, Evaluate(o_.steps));
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrFormat("pretrain: %d steps in %.1f s (%.0f tokens/s), loss %.4f -> %.4f", sum_.steps,
                                sum_.seconds, sum_.tokens_per_second, sum_.first_loss, sum_.last_loss));
  if (sum_.after.positions > 0) reporter_.Log(jobs::LogLevel::kInfo, "held-out after: " + StatsLine(sum_.after));
  QATD_RETURN_IF_ERROR(WriteOutput());
  if (summary != nullptr) *summary = sum_;
  return absl::OkStatus();
}

absl::Status Pretrainer::CheckInputs() {
  QATD_RETURN_IF_ERROR(o_.Validate());
  std::error_code ec;
  if (fs::exists(o_.output_dir, ec) && !o_.overwrite)
    return absl::AlreadyExistsError(absl::StrCat("output_dir ", o_.output_dir, " already exists (overwrite is off)"));
  QATD_ASSIGN_OR_RETURN(format_, kd::ParseDatasetFormat(o_.format));
  QATD_ASSIGN_OR_RETURN(thinking_, kd::ParseThinkingMode(o_.thinking));
  QATD_ASSIGN_OR_RETURN(text_unit_, kd::ParseTextUnit(o_.text_unit));
  QATD_ASSIGN_OR_RETURN(device_, ParseDevice(o_.device));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (!fs::exists(fs::path(o_.model_dir) / f, ec))
      return absl::NotFoundError(absl::StrCat("model_dir ", o_.model_dir, ": missing ", f));
  if (o_.threads > 0) at::set_num_threads(o_.threads);
  return absl::OkStatus();
}

// 1. Data: read, tokenizer and config, split, pack.
absl::Status Pretrainer::LoadData() {
  QATD_ASSIGN_OR_RETURN(kd::Dataset data, kd::ReadDataset({o_.dataset, format_, o_.text_field, text_unit_}));
  for (const kd::BadRecord& bad : data.bad_records)
    reporter_.Log(jobs::LogLevel::kWarning, absl::StrCat("skipping bad record ", bad.location.ToString(), ": ", bad.reason));
  if (data.records.empty()) return absl::FailedPreconditionError(absl::StrCat("dataset ", o_.dataset, " has no usable records"));
  QATD_ASSIGN_OR_RETURN(model::Tokenizer tokenizer, model::Tokenizer::FromFile(o_.model_dir));
  tokenizer_.emplace(std::move(tokenizer));
  QATD_ASSIGN_OR_RETURN(config_, model::Qwen3Config::FromFile(o_.model_dir));
  if (o_.seq_len > config_.max_position_embeddings)
    return absl::InvalidArgumentError(absl::StrCat("seq_len must be <= max_position_embeddings (",
                                                   config_.max_position_embeddings, "), got ", o_.seq_len));
  eos_ = tokenizer_->eos_token_id().value_or(-1);
  if (eos_ < 0) eos_ = config_.eos_token_id;
  if (eos_ < 0) return absl::FailedPreconditionError("no eos token: neither tokenizer_config.json nor config.json names one");
  return PackData(data);
}

// Held-out split of the records, then the training and evaluation blocks.
absl::Status Pretrainer::PackData(const kd::Dataset& data) {
  const int64_t n_records = static_cast<int64_t>(data.records.size());
  int64_t n_heldout = 0;
  if (o_.holdout_fraction > 0 && o_.eval_blocks > 0 && n_records >= 2)
    n_heldout = std::clamp<int64_t>(std::llround(o_.holdout_fraction * n_records), 1, n_records / 2);
  kd::Dataset train_data, heldout_data;
  const std::vector<int64_t> perm = kd::SeededPermutation(n_records, kd::MixSeed(o_.seed, 1));
  for (int64_t i = 0; i < n_records; ++i)
    (i < n_heldout ? heldout_data : train_data).records.push_back(data.records[static_cast<size_t>(perm[i])]);
  const kd::RenderOptions render{format_, thinking_};
  const auto eos = static_cast<int32_t>(eos_);
  QATD_ASSIGN_OR_RETURN(train_blocks_, PackBlocks(train_data, *tokenizer_, render, o_.seq_len, eos,
                                                  kd::MixSeed(o_.seed, 2), o_.steps * o_.batch_size));
  QATD_ASSIGN_OR_RETURN(eval_blocks_, PackBlocks(heldout_data, *tokenizer_, render, o_.seq_len, eos,
                                                 kd::MixSeed(o_.seed, 3), o_.eval_blocks));
  n_blocks_ = train_blocks_.size(0);
  if (n_blocks_ < o_.batch_size)
    return absl::FailedPreconditionError(absl::StrCat("the training records pack into ", n_blocks_, " blocks of ",
                                                      o_.seq_len, " tokens, fewer than batch_size ", o_.batch_size));
  if (train_blocks_.max().item<int64_t>() >= config_.vocab_size)
    return absl::FailedPreconditionError(absl::StrCat("the tokenizer produces ids >= the model's vocab_size ",
                                                      config_.vocab_size));
  reporter_.Log(jobs::LogLevel::kInfo,
                absl::StrCat("pretrain data: ", n_records - n_heldout, " training records -> ", n_blocks_, " blocks of ",
                             o_.seq_len, " tokens; ", n_heldout, " held-out records -> ", eval_blocks_.size(0),
                             " evaluation blocks"));
  sum_.train_records = n_records - n_heldout;
  sum_.heldout_records = n_heldout;
  sum_.train_blocks = n_blocks_;
  sum_.eval_blocks = eval_blocks_.size(0);
  return absl::OkStatus();
}

absl::StatusOr<NextTokenStats> Pretrainer::Evaluate(int64_t step) {
  QATD_ASSIGN_OR_RETURN(NextTokenStats s, MeasureNextToken(m_, eval_blocks_));
  if (s.positions > 0) {
    reporter_.Metric("pretrain/eval_cross_entropy", step, s.cross_entropy);
    reporter_.Metric("pretrain/eval_entropy", step, s.entropy);
    reporter_.Metric("pretrain/eval_top1_prob", step, s.top1_prob);
  }
  return s;
}

// The training loop (inside CatchTorch).
absl::Status Pretrainer::Train() {
  m_->train();
  SetUpVocabulary();
  SetUpOptimizers();
  gen_ = at::make_generator<at::CPUGeneratorImpl>(kd::MixSeed(o_.seed, 4));
  cursor_ = n_blocks_;
  epoch_ = 0;
  auto start = Clock::now();
  for (int64_t step = 0; step < o_.steps; ++step) {
    if (cancel_.cancelled()) return absl::CancelledError(absl::StrCat("pretraining cancelled at step ", step));
    QATD_ASSIGN_OR_RETURN(const double loss_value, Step(step));
    losses_.push_back(loss_value);
    reporter_.Metric("pretrain/loss", step + 1, loss_value);
    reporter_.Metric("pretrain/lr", step + 1, LearningRate(o_, step));
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const double rate = (step + 1) / std::max(elapsed, 1e-9);
    reporter_.Progress(step + 1, o_.steps, "steps", rate, (o_.steps - step - 1) / rate);
    if (o_.eval_every > 0 && (step + 1) % o_.eval_every == 0 && step + 1 < o_.steps) {
      const auto eval_start = Clock::now();
      QATD_RETURN_IF_ERROR(Evaluate(step + 1).status());
      m_->train();
      start += Clock::now() - eval_start;  // evaluation time is not training time
    }
  }
  sum_.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return absl::OkStatus();
}

// The active ids (every id of the training blocks), the inactive ones, and the sampled-softmax
// constants.
void Pretrainer::SetUpVocabulary() {
  const int64_t vocab = config_.vocab_size;
  active_ = std::get<0>(at::_unique(train_blocks_.flatten(), /*sorted=*/true));
  at::Tensor is_active = at::zeros({vocab}, at::kBool);
  is_active.index_fill_(0, active_, true);
  inactive_ = is_active.logical_not().nonzero().squeeze(1);
  at::Tensor position = at::full({vocab}, -1, at::kLong);  // id -> index in `active`
  position.index_copy_(0, active_, at::arange(active_.numel(), at::kLong));
  n_active_ = active_.numel();
  n_inactive_ = inactive_.numel();
  sum_.active_vocab = n_active_;
  sampled_ = o_.vocab_sample > 0;
  n_sample_ = std::min(o_.vocab_sample, n_inactive_);
  log_weight_ = n_sample_ > 0 ? std::log(static_cast<double>(n_inactive_) / static_cast<double>(n_sample_)) : 0.0;
  // Local (active-index) copy of the blocks for the sampled path.
  local_blocks_ = position.index_select(0, train_blocks_.flatten()).reshape(train_blocks_.sizes());
  active_dev_ = active_.to(device_);
}

// Under the sampled softmax the embedding (and an untied lm_head) are updated row-wise by
// RowAdamW; everything else by torch's AdamW (matrices with weight decay, the rest without).
void Pretrainer::SetUpOptimizers() {
  embed_ = m_->model->embed_tokens->weight;
  out_w_ = OutputWeight(m_);
  std::vector<at::Tensor> decay, no_decay;
  for (auto& p : m_->parameters()) {
    if (sampled_ && (p.is_same(embed_) || p.is_same(out_w_))) continue;
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  auto adamw = torch::optim::AdamWOptions(o_.lr).betas({kBeta1, kBeta2}).eps(kAdamEps);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(adamw.weight_decay(o_.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(adamw.weight_decay(0.0)));
  optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups), adamw);
  if (sampled_) {
    embed_opt_ = std::make_unique<RowAdamW>(embed_, kBeta1, kBeta2, kAdamEps);
    if (!m_->tied()) out_opt_ = std::make_unique<RowAdamW>(out_w_, kBeta1, kBeta2, kAdamEps);
  }
}

// The next batch_size blocks of this epoch's permutation: [batch_size] indices.
at::Tensor Pretrainer::NextBatch() {
  std::vector<int64_t> picks;
  while (static_cast<int64_t>(picks.size()) < o_.batch_size) {
    if (cursor_ >= n_blocks_) {
      order_ = kd::SeededPermutation(n_blocks_, kd::MixSeed(o_.seed, 100 + epoch_++));
      cursor_ = 0;
    }
    picks.push_back(order_[static_cast<size_t>(cursor_++)]);
  }
  return at::tensor(picks, at::kLong);
}

// One optimizer step; returns its training loss. INTERNAL when the loss is not finite.
absl::StatusOr<double> Pretrainer::Step(int64_t step) {
  const at::Tensor pick = NextBatch();
  const double lr = LearningRate(o_, step);
  for (auto& g : optimizer_->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  optimizer_->zero_grad();
  at::Tensor loss, rows, out_leaf, in_leaf;
  if (!sampled_) {
    const at::Tensor ids = train_blocks_.index_select(0, pick).to(device_);
    loss = HardFullLoss(m_->Forward(ids), out_w_, ids.slice(1, 1).unsqueeze(-1), 1024);
  } else {
    // Rows in play: the active ids, then n_sample inactive ids drawn without replacement.
    rows = active_;
    if (n_sample_ > 0) {
      at::Tensor draw = at::randperm(n_inactive_, gen_, at::TensorOptions().dtype(at::kLong)).slice(0, 0, n_sample_);
      rows = at::cat({active_, inactive_.index_select(0, draw)});
    }
    rows = rows.to(device_);
    out_leaf = out_w_.detach().index_select(0, rows).requires_grad_(true);  // [A + R, H]
    in_leaf = m_->tied() ? out_leaf.slice(0, 0, n_active_)
                         : embed_.detach().index_select(0, active_dev_).requires_grad_(true);  // [A, H]
    const at::Tensor local = local_blocks_.index_select(0, pick).to(device_);  // [B, L] indices < A
    at::Tensor x = in_leaf.index_select(0, local.flatten()).reshape({local.size(0), local.size(1), -1});
    for (int64_t i = 0; i < m_->num_layers(); ++i) x = m_->RunLayer(i, x, 0);
    at::Tensor h = m_->FinalNorm(x).slice(1, 0, -1).reshape({-1, x.size(-1)});
    loss = SampledCrossEntropy(h, out_leaf, local.slice(1, 1).reshape(-1), n_active_, log_weight_);
  }
  const double loss_value = loss.item<double>();
  if (!std::isfinite(loss_value))
    return absl::InternalError(absl::StrCat("non-finite training loss at step ", step, "; nothing written"));
  loss.backward();
  if (o_.grad_clip > 0) {
    std::vector<at::Tensor> grads;
    for (auto& p : m_->parameters()) grads.push_back(p.grad());
    if (sampled_) {
      grads.push_back(out_leaf.grad());
      if (!m_->tied()) grads.push_back(in_leaf.grad());
    }
    ClipGradients(grads, o_.grad_clip);
  }
  optimizer_->step();
  if (sampled_) {
    if (m_->tied()) {
      embed_opt_->Step(rows, out_leaf.grad(), lr, o_.weight_decay, step + 1);
    } else {
      out_opt_->Step(rows, out_leaf.grad(), lr, o_.weight_decay, step + 1);
      embed_opt_->Step(active_dev_, in_leaf.grad(), lr, o_.weight_decay, step + 1);
    }
  }
  return loss_value;
}

void Pretrainer::Summarize() {
  sum_.steps = o_.steps;
  const size_t k = std::min<size_t>(10, losses_.size());
  for (size_t i = 0; i < k; ++i) {
    sum_.first_loss += losses_[i] / k;
    sum_.last_loss += losses_[losses_.size() - k + i] / k;
  }
  sum_.tokens_per_second = static_cast<double>(o_.steps * o_.batch_size * o_.seq_len) / std::max(sum_.seconds, 1e-9);
}

// 3. Output: assemble next to output_dir, then rename into place.
absl::Status Pretrainer::WriteOutput() {
  std::error_code ec;
  if (!o_.save_dtype.empty()) config_.torch_dtype = o_.save_dtype;
  QATD_ASSIGN_OR_RETURN(const at::ScalarType save_dtype, model::ParseTorchDtype(config_.torch_dtype));
  fs::path dest = fs::absolute(fs::path(o_.output_dir), ec);
  if (ec) dest = fs::path(o_.output_dir);
  fs::create_directories(dest.parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dest.parent_path().string(), ": ", ec.message()));
  const std::string tmp = absl::StrCat(dest.string(), ".tmp-", ::getpid());
  QATD_RETURN_IF_ERROR(RemoveTree(tmp));
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  absl::Status written = [&]() -> absl::Status {
    model::SaveOptions save;
    save.dtype = save_dtype;
    QATD_RETURN_IF_ERROR(model::SaveQwen3(m_, config_, tmp, save));
    QATD_RETURN_IF_ERROR(CopyTokenizerFiles(o_.model_dir, tmp));
    json record = {
        {"source_model", o_.model_dir},
        {"dataset", o_.dataset},
        {"options",
         {{"format", o_.format}, {"thinking", o_.thinking}, {"seq_len", o_.seq_len}, {"batch_size", o_.batch_size},
          {"steps", o_.steps}, {"lr", o_.lr}, {"warmup_steps", o_.warmup_steps}, {"min_lr_ratio", o_.min_lr_ratio},
          {"weight_decay", o_.weight_decay}, {"grad_clip", o_.grad_clip}, {"vocab_sample", o_.vocab_sample},
          {"holdout_fraction", o_.holdout_fraction}, {"seed", o_.seed}}},
        {"train_blocks", sum_.train_blocks},
        {"active_vocab", sum_.active_vocab},
        {"first_loss", sum_.first_loss},
        {"last_loss", sum_.last_loss},
        {"heldout_before", StatsJson(sum_.before)},
        {"heldout_after", StatsJson(sum_.after)}};
    std::ofstream out(fs::path(tmp) / "pretrain.json");
    out << record.dump(2) << "\n";
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("writing ", tmp, "/pretrain.json"));
    return InstallDirectory(tmp, dest.string(), o_.overwrite);
  }();
  if (!written.ok()) {
    (void)RemoveTree(tmp);
    return written;
  }
  reporter_.Artifact(dest.string(), "model");
  return absl::OkStatus();
}

}  // namespace

absl::Status Pretrain(const PretrainOptions& o, jobs::Reporter& reporter, jobs::CancelToken& cancel,
                      PretrainSummary* summary) {
  return Pretrainer(o, reporter, cancel).Run(summary);
}

}  // namespace qatd::train

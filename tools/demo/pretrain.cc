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
    const at::Tensor inactive = is_active.logical_not().nonzero().squeeze(1);
    at::Tensor position = at::full({vocab}, -1, at::kLong);  // id -> index in `active`
    position.index_copy_(0, active, at::arange(active.numel(), at::kLong));
    const int64_t n_active = active.numel(), n_inactive = inactive.numel();
    sum.active_vocab = n_active;
    const bool sampled = o.vocab_sample > 0;
    const int64_t n_sample = std::min(o.vocab_sample, n_inactive);
    const double log_weight =
        n_sample > 0 ? std::log(static_cast<double>(n_inactive) / static_cast<double>(n_sample)) : 0.0;
    // Local (active-index) copy of the blocks for the sampled path.
    const at::Tensor local_blocks = position.index_select(0, train_blocks.flatten()).reshape(train_blocks.sizes());

    // Parameters: under the sampled softmax the embedding (and an untied lm_head) are updated
    // row-wise by RowAdamW; everything else by torch's AdamW.
    at::Tensor embed = m->model->embed_tokens->weight;
    at::Tensor out_w = OutputWeight(m);
    std::vector<at::Tensor> decay, no_decay;
    for (auto& p : m->parameters()) {
      if (sampled && (p.is_same(embed) || p.is_same(out_w))) continue;
      (p.dim() >= 2 ? decay : no_decay).push_back(p);
    }
    auto adamw = torch::optim::AdamWOptions(o.lr).betas({kBeta1, kBeta2}).eps(kAdamEps);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(adamw.weight_decay(o.weight_decay)));
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(adamw.weight_decay(0.0)));
    torch::optim::AdamW optimizer(std::move(groups), adamw);
    std::unique_ptr<RowAdamW> embed_opt, out_opt;
    if (sampled) {
      embed_opt = std::make_unique<RowAdamW>(embed, kBeta1, kBeta2, kAdamEps);
      if (!m->tied()) out_opt = std::make_unique<RowAdamW>(out_w, kBeta1, kBeta2, kAdamEps);
    }
    const at::Tensor active_dev = active.to(device);

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
      const at::Tensor pick = at::tensor(picks, at::kLong);
      const double lr = LearningRate(o, step);
      for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      optimizer.zero_grad();

      at::Tensor loss;
      std::vector<at::Tensor> grads;
      at::Tensor rows, out_leaf, in_leaf;
      if (!sampled) {
        const at::Tensor ids = train_blocks.index_select(0, pick).to(device);
        loss = HardFullLoss(m->Forward(ids), out_w, ids.slice(1, 1).unsqueeze(-1), 1024);
      } else {
        // Rows in play: the active ids, then n_sample inactive ids drawn without replacement.
        rows = active;
        if (n_sample > 0) {
          at::Tensor draw = at::randperm(n_inactive, gen, at::TensorOptions().dtype(at::kLong)).slice(0, 0, n_sample);
          rows = at::cat({active, inactive.index_select(0, draw)});
        }
        rows = rows.to(device);
        out_leaf = out_w.detach().index_select(0, rows).requires_grad_(true);  // [A + R, H]
        in_leaf = m->tied() ? out_leaf.slice(0, 0, n_active)
                            : embed.detach().index_select(0, active_dev).requires_grad_(true);  // [A, H]
        const at::Tensor local = local_blocks.index_select(0, pick).to(device);  // [B, L] indices < A
        at::Tensor x = in_leaf.index_select(0, local.flatten()).reshape({local.size(0), local.size(1), -1});
        for (int64_t i = 0; i < m->num_layers(); ++i) x = m->RunLayer(i, x, 0);
        at::Tensor h = m->FinalNorm(x).slice(1, 0, -1).reshape({-1, x.size(-1)});
        loss = SampledCrossEntropy(h, out_leaf, local.slice(1, 1).reshape(-1), n_active, log_weight);
      }
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value))
        return absl::InternalError(absl::StrCat("non-finite training loss at step ", step, "; nothing written"));
      loss.backward();
      if (o.grad_clip > 0) {
        for (auto& p : m->parameters()) grads.push_back(p.grad());
        if (sampled) {
          grads.push_back(out_leaf.grad());
          if (!m->tied()) grads.push_back(in_leaf.grad());
        }
        ClipGradients(grads, o.grad_clip);
      }
      optimizer.step();
      if (sampled) {
        if (m->tied()) {
          embed_opt->Step(rows, out_leaf.grad(), lr, o.weight_decay, step + 1);
        } else {
          out_opt->Step(rows, out_leaf.grad(), lr, o.weight_decay, step + 1);
          embed_opt->Step(active_dev, in_leaf.grad(), lr, o.weight_decay, step + 1);
        }
      }

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
        start += Clock::now() - eval_start;  // evaluation time is not training time
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

#include "core/model/qwen3_model.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <string>
#include <utility>

#include "core/cuda/fused_ops.h"
#include "core/model/torch_compat.h"

namespace qatd::model {
namespace {

// In-place arithmetic saves an allocation per op, but autograd may need the overwritten
// values (and a quantized LinearLayer may save its output), so only without grad.
bool InPlaceOk() { return !at::GradMode::is_enabled(); }

// x: [B, S, n, D]. HF: x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1).
// Here cat(x2, x1) = roll(x, D/2) and the sign lives in rope.sin_signed = cat(-sin, sin):
// three kernels (mul, roll, addcmul) instead of HF's six. addcmul rounds once where HF
// rounds the product and the sum separately (bf16: an ulp at most).
// On CUDA one fused kernel does the same arithmetic (core/cuda ApplyRope; tests compare it with
// these ops); with autograd it is one node whose backward is the transposed rotation
// dL/dx[d] = g[d]·cos[d] + g[d + D/2]·sin_signed[d + D/2] (indices mod D), one more kernel.
// In a training step this replaces 3 forward and ~5 backward ATen kernels per q and k.
struct RopeFn : public torch::autograd::Function<RopeFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin_signed) {
    ctx->save_for_backward({cos, sin_signed});
    at::Tensor out;
    if (cuda::TryApplyRope(x, cos, sin_signed, /*transpose=*/false, &out)) return out;
    return at::addcmul(x * cos, x.roll(x.size(-1) / 2, -1), sin_signed);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor g = grads[0].contiguous();
    at::Tensor gx;
    if (!cuda::TryApplyRope(g, saved[0], saved[1], /*transpose=*/true, &gx)) {
      // Kernels switched off in between: the transpose as ATen ops.
      const int64_t h = g.size(-1) / 2;
      gx = at::addcmul(g * saved[0], g.roll(h, -1), saved[1].roll(h, -1));
    }
    return {gx, at::Tensor(), at::Tensor()};
  }
};

at::Tensor ApplyRope(const at::Tensor& x, const RotaryTables& rope) {
  at::Tensor out;
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    if (cuda::TryApplyRope(x, rope.cos, rope.sin_signed, /*transpose=*/false, &out)) return out;
  } else if (cuda::FusedKernelsEnabled() && x.is_cuda()) {
    return RopeFn::apply(x, rope.cos, rope.sin_signed);  // falls back to the ops inside if need be
  }
  return at::addcmul(x * rope.cos, x.roll(x.size(-1) / 2, -1), rope.sin_signed);
}

std::shared_ptr<LinearLayer> MakeDense(int64_t in, int64_t out, const at::TensorOptions& options) {
  return std::make_shared<DenseLinear>(in, out, options);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

RmsNorm::RmsNorm(int64_t dim, double eps, at::TensorOptions options) : eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}, options));
}

at::Tensor RmsNorm::forward(const at::Tensor& x) { return RmsNormalize(x, weight, eps_); }

TokenEmbedding::TokenEmbedding(int64_t vocab, int64_t hidden, at::TensorOptions options) {
  weight = register_parameter("weight", at::zeros({vocab, hidden}, options));
}

at::Tensor TokenEmbedding::forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

// ---------------------------------------------------------------------------------------------

Qwen3Attention::Qwen3Attention(const Qwen3Config& c, at::TensorOptions options)
    : num_heads_(c.num_attention_heads),
      num_kv_heads_(c.num_key_value_heads),
      head_dim_(c.head_dim),
      scale_(1.0 / std::sqrt(static_cast<double>(c.head_dim))) {
  const int64_t q_out = num_heads_ * head_dim_, kv_out = num_kv_heads_ * head_dim_;
  q_proj = register_module("q_proj", MakeDense(c.hidden_size, q_out, options));
  k_proj = register_module("k_proj", MakeDense(c.hidden_size, kv_out, options));
  v_proj = register_module("v_proj", MakeDense(c.hidden_size, kv_out, options));
  o_proj = register_module("o_proj", MakeDense(q_out, c.hidden_size, options));
  q_norm = register_module("q_norm", std::make_shared<RmsNorm>(head_dim_, c.rms_norm_eps, options));
  k_norm = register_module("k_norm", std::make_shared<RmsNorm>(head_dim_, c.rms_norm_eps, options));
}

at::Tensor Qwen3Attention::forward(const at::Tensor& x, const RotaryTables& rope, int64_t start_pos,
                                   KvCache* cache, int64_t layer) {
  const int64_t b = x.size(0), s = x.size(1);
  // Projections come out [B, S, n*D] contiguous; q_norm/k_norm run per head before RoPE.
  at::Tensor q = ApplyRope(q_norm->forward(q_proj->forward(x).view({b, s, num_heads_, head_dim_})), rope);
  at::Tensor k = ApplyRope(k_norm->forward(k_proj->forward(x).view({b, s, num_kv_heads_, head_dim_})), rope);
  at::Tensor v = v_proj->forward(x).view({b, s, num_kv_heads_, head_dim_});
  q = q.transpose(1, 2);  // [B, Hq, S, D] views
  k = k.transpose(1, 2);
  v = v.transpose(1, 2);
  if (cache != nullptr) {
    at::Tensor& ck = cache->k[layer];
    at::Tensor& cv = cache->v[layer];
    ck.narrow(2, start_pos, s).copy_(k);
    cv.narrow(2, start_pos, s).copy_(v);
    k = ck.narrow(2, 0, start_pos + s);
    v = cv.narrow(2, 0, start_pos + s);
  }
  at::Tensor attn = Attention(q, k, v, /*causal=*/true, start_pos, scale_);  // [B, Hq, S, D]
  return o_proj->forward(attn.transpose(1, 2).reshape({b, s, num_heads_ * head_dim_}));
}

Qwen3Mlp::Qwen3Mlp(const Qwen3Config& c, at::TensorOptions options) {
  gate_proj = register_module("gate_proj", MakeDense(c.hidden_size, c.intermediate_size, options));
  up_proj = register_module("up_proj", MakeDense(c.hidden_size, c.intermediate_size, options));
  down_proj = register_module("down_proj", MakeDense(c.intermediate_size, c.hidden_size, options));
}

at::Tensor Qwen3Mlp::forward(const at::Tensor& x) {
  at::Tensor gate = gate_proj->forward(x);
  at::Tensor up = up_proj->forward(x);
  if (InPlaceOk()) return down_proj->forward(at::silu_(gate).mul_(up));
  return down_proj->forward(at::silu(gate) * up);
}

Qwen3DecoderLayer::Qwen3DecoderLayer(const Qwen3Config& c, at::TensorOptions options) {
  self_attn = register_module("self_attn", std::make_shared<Qwen3Attention>(c, options));
  mlp = register_module("mlp", std::make_shared<Qwen3Mlp>(c, options));
  input_layernorm = register_module(
      "input_layernorm", std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, options));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, options));
}

at::Tensor Qwen3DecoderLayer::forward(const at::Tensor& x, const RotaryTables& rope,
                                      int64_t start_pos, KvCache* cache, int64_t layer) {
  // The residual adds write into the freshly made branch outputs, never into x, so tensors
  // collected by the caller (residuals) stay valid.
  at::Tensor h = self_attn->forward(input_layernorm->forward(x), rope, start_pos, cache, layer);
  h = InPlaceOk() ? h.add_(x) : h + x;
  at::Tensor m = mlp->forward(post_attention_layernorm->forward(h));
  return InPlaceOk() ? m.add_(h) : m + h;
}

Qwen3Backbone::Qwen3Backbone(const Qwen3Config& c, at::TensorOptions options) {
  embed_tokens = register_module(
      "embed_tokens", std::make_shared<TokenEmbedding>(c.vocab_size, c.hidden_size, options));
  auto layer_list = register_module("layers", std::make_shared<torch::nn::Module>("ModuleList"));
  layers.reserve(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(layer_list->register_module(std::to_string(i),
                                                 std::make_shared<Qwen3DecoderLayer>(c, options)));
  }
  norm = register_module("norm", std::make_shared<RmsNorm>(c.hidden_size, c.rms_norm_eps, options));
}

// ---------------------------------------------------------------------------------------------

Qwen3ModelImpl::Qwen3ModelImpl(const Qwen3Config& config, at::TensorOptions options)
    : config_(config) {
  const Qwen3Config& c = config_;
  TORCH_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 &&
                  c.vocab_size > 0 && c.head_dim > 0 && c.head_dim % 2 == 0,
              "Qwen3 config: sizes must be positive and head_dim even");
  TORCH_CHECK(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
              "Qwen3 config: num_attention_heads (", c.num_attention_heads,
              ") must be a positive multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  if (!options.has_dtype()) options = options.dtype(at::kFloat);
  const at::ScalarType dt = c10::typeMetaToScalarType(options.dtype());
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
              "Qwen3Model: dtype must be float32, bfloat16 or float16, got ", dt);
  options = options.requires_grad(false);

  model = register_module("model", std::make_shared<Qwen3Backbone>(c, options));
  if (!c.tie_word_embeddings) {
    lm_head = register_module("lm_head", MakeDense(c.hidden_size, c.vocab_size, options));
  }

  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    Qwen3DecoderLayer& layer = *model->layers[i];
    Qwen3Attention& a = *layer.self_attn;
    Qwen3Mlp& m = *layer.mlp;
    const std::pair<const char*, std::shared_ptr<LinearLayer>*> attn_slots[] = {
        {"q_proj", &a.q_proj}, {"k_proj", &a.k_proj}, {"v_proj", &a.v_proj}, {"o_proj", &a.o_proj}};
    for (const auto& [child, member] : attn_slots) {
      const std::string name = prefix + "self_attn." + child;
      linear_slots_[name] = LinearSlot{&a, child, member};
      linear_names_.push_back(name);
    }
    const std::pair<const char*, std::shared_ptr<LinearLayer>*> mlp_slots[] = {
        {"gate_proj", &m.gate_proj}, {"up_proj", &m.up_proj}, {"down_proj", &m.down_proj}};
    for (const auto& [child, member] : mlp_slots) {
      const std::string name = prefix + "mlp." + child;
      linear_slots_[name] = LinearSlot{&m, child, member};
      linear_names_.push_back(name);
    }
  }
  if (lm_head) {
    linear_slots_["lm_head"] = LinearSlot{this, "lm_head", &lm_head};
    linear_names_.push_back("lm_head");
  }
}

RotaryTables Qwen3ModelImpl::Rope(int64_t start_pos, int64_t len) const {
  // Built on the model's device every call: a few tiny kernels, but no host-to-device copy
  // (which would block once per decoding step).
  const at::Device dev = device();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  // HF: inv_freq = 1 / theta^(arange(0, D, 2) / D), in fp32.
  at::Tensor exponents = at::arange(0, config_.head_dim, 2, f32.dtype(at::kLong)).to(at::kFloat) / config_.head_dim;
  at::Tensor inv_freq = at::pow(config_.rope_theta, exponents).reciprocal();
  at::Tensor positions = at::arange(start_pos, start_pos + len, f32);
  at::Tensor freqs = at::outer(positions, inv_freq).unsqueeze(1);  // [S, 1, D/2] fp32
  at::Tensor cos = freqs.cos(), sin = freqs.sin();
  const at::ScalarType dt = dtype();
  return RotaryTables{at::cat({cos, cos}, -1).to(dt), at::cat({-sin, sin}, -1).to(dt)};
}

at::Tensor Qwen3ModelImpl::Embed(const at::Tensor& ids) { return model->embed_tokens->forward(ids); }

at::Tensor Qwen3ModelImpl::FinalNorm(const at::Tensor& x) { return model->norm->forward(x); }

at::Tensor Qwen3ModelImpl::RunLayer(int64_t layer, const at::Tensor& x, int64_t start_pos) {
  TORCH_CHECK(layer >= 0 && layer < num_layers(), "RunLayer: layer ", layer, " out of range [0, ",
              num_layers(), ")");
  TORCH_CHECK(x.dim() == 3, "RunLayer: x must be [B, S, H], got ", x.sizes());
  return model->layers[layer]->forward(x, Rope(start_pos, x.size(1)), start_pos, nullptr, layer);
}

at::Tensor Qwen3ModelImpl::Forward(const at::Tensor& ids, KvCache* cache, int64_t start_pos,
                                   std::vector<at::Tensor>* residuals) {
  TORCH_CHECK(ids.dim() == 2, "Forward: ids must be [B, S], got ", ids.sizes());
  TORCH_CHECK(ids.scalar_type() == at::kLong || ids.scalar_type() == at::kInt,
              "Forward: ids must be int64 or int32, got ", ids.scalar_type());
  const int64_t b = ids.size(0), s = ids.size(1);
  TORCH_CHECK(b > 0 && s > 0, "Forward: empty batch ", ids.sizes());
  if (start_pos == kAppend) start_pos = cache != nullptr ? cache->length : 0;
  TORCH_CHECK(start_pos >= 0, "Forward: start_pos must be >= 0, got ", start_pos);
  if (cache != nullptr) {
    TORCH_CHECK(static_cast<int64_t>(cache->k.size()) == num_layers() &&
                    cache->v.size() == cache->k.size(),
                "Forward: cache has ", cache->k.size(), " layers, model ", num_layers());
    TORCH_CHECK(cache->batch_size() == b, "Forward: cache batch ", cache->batch_size(),
                " != ids batch ", b);
    TORCH_CHECK(start_pos <= cache->length, "Forward: start_pos ", start_pos,
                " is past the cached length ", cache->length);
    TORCH_CHECK(start_pos + s <= cache->max_length(), "Forward: ", start_pos, " + ", s,
                " positions exceed the cache's max_length ", cache->max_length());
  }
  if (residuals != nullptr) residuals->clear();

  const RotaryTables rope = Rope(start_pos, s);
  at::Tensor x = Embed(ids);
  if (residuals != nullptr) residuals->push_back(x);
  for (int64_t i = 0; i < num_layers(); ++i) {
    x = model->layers[i]->forward(x, rope, start_pos, cache, i);
    if (residuals != nullptr) residuals->push_back(x);
  }
  x = FinalNorm(x);
  if (residuals != nullptr) residuals->push_back(x);
  if (cache != nullptr) cache->length = start_pos + s;
  return x;
}

at::Tensor Qwen3ModelImpl::Logits(const at::Tensor& hidden) {
  if (lm_head) return lm_head->forward(hidden);
  return at::linear(hidden, model->embed_tokens->weight);
}

at::Tensor Qwen3ModelImpl::ForwardLogits(const at::Tensor& ids, KvCache* cache, int64_t start_pos) {
  return Logits(Forward(ids, cache, start_pos));
}

KvCache Qwen3ModelImpl::NewKvCache(int64_t batch, int64_t max_length) const {
  TORCH_CHECK(batch > 0 && max_length > 0, "NewKvCache: batch and max_length must be positive, got ",
              batch, " and ", max_length);
  const auto options = at::TensorOptions().dtype(dtype()).device(device());
  KvCache cache;
  cache.k.reserve(num_layers());
  cache.v.reserve(num_layers());
  for (int64_t i = 0; i < num_layers(); ++i) {
    cache.k.push_back(at::empty({batch, config_.num_key_value_heads, max_length, config_.head_dim}, options));
    cache.v.push_back(at::empty({batch, config_.num_key_value_heads, max_length, config_.head_dim}, options));
  }
  return cache;
}

std::vector<std::string> Qwen3ModelImpl::LinearNames() const { return linear_names_; }

std::shared_ptr<LinearLayer> Qwen3ModelImpl::GetLinear(const std::string& name) const {
  auto it = linear_slots_.find(name);
  return it == linear_slots_.end() ? nullptr : *it->second.member;
}

void Qwen3ModelImpl::ReplaceLinear(const std::string& name, std::shared_ptr<LinearLayer> layer) {
  auto it = linear_slots_.find(name);
  TORCH_CHECK(it != linear_slots_.end(), "ReplaceLinear: no linear layer named '", name, "'");
  TORCH_CHECK(layer != nullptr, "ReplaceLinear: null layer for '", name, "'");
  LinearSlot& slot = it->second;
  const std::shared_ptr<LinearLayer>& old = *slot.member;
  TORCH_CHECK(layer->in_features() == old->in_features() && layer->out_features() == old->out_features(),
              "ReplaceLinear: '", name, "' is ", old->in_features(), " -> ", old->out_features(),
              ", the new layer is ", layer->in_features(), " -> ", layer->out_features());
  *slot.member = slot.parent->replace_module(slot.child, std::move(layer));
}

}  // namespace qatd::model

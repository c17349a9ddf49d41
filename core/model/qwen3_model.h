#pragma once
// Qwen3 causal language model (Qwen3ForCausalLM) in LibTorch.
//
// Parameter names are exactly the Hugging Face names, so `named_parameters()` of a dense
// model maps 1:1 onto a checkpoint's safetensors:
//   model.embed_tokens.weight                       [V, H]
//   model.layers.{i}.input_layernorm.weight         [H]
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight
//   model.layers.{i}.self_attn.{q,k}_norm.weight    [head_dim]
//   model.layers.{i}.post_attention_layernorm.weight [H]
//   model.layers.{i}.mlp.{gate,up,down}_proj.weight
//   model.norm.weight                               [H]
//   lm_head.weight                                  [V, H]  (only when not tied)
//
// Every projection is a LinearLayer held through a member pointer, so core/quant can swap in
// quantized layers with ReplaceLinear() and the forward uses them.
//
// Math follows transformers' Qwen3 (spec: modeling_qwen3.py): RMSNorm normalising in fp32
// (torch_compat.h RmsNormalize, fused on LibTorch 2.4+); q_norm/k_norm per head before RoPE;
// rotate-half RoPE over the full head_dim with cos/sin computed in fp32 and cast to the model
// dtype; grouped-query attention with softmax in fp32; SiLU-gated MLP; final RMSNorm; lm_head
// tied to the embedding when config.tie_word_embeddings.
//
// Thread safety: a model may be read by several threads, but one forward per KvCache at a
// time; ReplaceLinear/to() must not race with a forward. Errors inside the forward are
// c10::Error (TORCH_CHECK); callers at API boundaries convert them with CatchTorch.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model/linear.h"
#include "core/model/qwen3_config.h"

namespace qatd::model {

// Keys and values of every layer for incremental decoding. Preallocated to max_length, so a
// decoding step allocates nothing for the cache.
struct KvCache {
  std::vector<at::Tensor> k;  // per layer [B, Hkv, max_length, head_dim], model dtype
  std::vector<at::Tensor> v;  // per layer, same shape
  int64_t length = 0;         // positions [0, length) hold valid keys/values

  int64_t batch_size() const { return k.empty() ? 0 : k[0].size(0); }
  int64_t max_length() const { return k.empty() ? 0 : k[0].size(2); }
  // Forgets the contents (keeps the memory).
  void Reset() { length = 0; }
};

// RoPE tables for S consecutive positions, [S, 1, head_dim] in the model dtype, computed in
// fp32: cos = HF's cos (cat(c, c)); sin_signed = cat(-s, s), HF's sin with the sign of
// rotate_half folded in.
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin_signed;
};

// y = weight * (x / rms(x)), normalised in fp32 (RmsNormalize). weight: [dim] named "weight".
class RmsNorm : public torch::nn::Module {
 public:
  RmsNorm(int64_t dim, double eps, at::TensorOptions options);
  // x: [..., dim] -> same shape and dtype.
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;

 private:
  double eps_;
};

// Token embedding table. weight: [V, H] named "weight".
class TokenEmbedding : public torch::nn::Module {
 public:
  TokenEmbedding(int64_t vocab, int64_t hidden, at::TensorOptions options);
  // ids: [...] int64/int32 -> [..., H]
  at::Tensor forward(const at::Tensor& ids);

  at::Tensor weight;
};

class Qwen3Attention : public torch::nn::Module {
 public:
  Qwen3Attention(const Qwen3Config& config, at::TensorOptions options);
  // x: [B, S, H]; positions start_pos .. start_pos + S - 1 (rope built for them). With a cache,
  // this layer's keys/values are written at those positions and attention spans
  // [0, start_pos + S); `layer` picks the cache slot.
  at::Tensor forward(const at::Tensor& x, const RotaryTables& rope, int64_t start_pos,
                     KvCache* cache, int64_t layer);

  std::shared_ptr<LinearLayer> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<RmsNorm> q_norm, k_norm;

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
  double scale_;
};

class Qwen3Mlp : public torch::nn::Module {
 public:
  Qwen3Mlp(const Qwen3Config& config, at::TensorOptions options);
  // down(silu(gate(x)) * up(x)); x: [..., H]
  at::Tensor forward(const at::Tensor& x);

  std::shared_ptr<LinearLayer> gate_proj, up_proj, down_proj;
};

class Qwen3DecoderLayer : public torch::nn::Module {
 public:
  Qwen3DecoderLayer(const Qwen3Config& config, at::TensorOptions options);
  // Pre-norm residual block; x: [B, S, H] -> [B, S, H]. Never modifies x.
  at::Tensor forward(const at::Tensor& x, const RotaryTables& rope, int64_t start_pos,
                     KvCache* cache, int64_t layer);

  std::shared_ptr<RmsNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<Qwen3Attention> self_attn;
  std::shared_ptr<Qwen3Mlp> mlp;
};

// The "model." part of Qwen3ForCausalLM: embeddings, decoder layers, final norm.
class Qwen3Backbone : public torch::nn::Module {
 public:
  Qwen3Backbone(const Qwen3Config& config, at::TensorOptions options);

  std::shared_ptr<TokenEmbedding> embed_tokens;
  std::vector<std::shared_ptr<Qwen3DecoderLayer>> layers;  // registered as "layers.{i}"
  std::shared_ptr<RmsNorm> norm;
};

class Qwen3ModelImpl : public torch::nn::Module {
 public:
  // `start_pos` value meaning "append after what the cache holds" (0 without a cache).
  static constexpr int64_t kAppend = -1;

  // Builds the model with dense projections. Linear and embedding weights start at zero and
  // norm weights at one: load (model_io.h LoadQwen3) or initialise (InitTinyQwen3) next.
  // options: dtype (fp32, bf16, fp16) and device of every parameter.
  // Throws c10::Error if the config is inconsistent (call config.Validate() first).
  explicit Qwen3ModelImpl(const Qwen3Config& config, at::TensorOptions options = {});
  // Not copyable: the linear slots point into this object's submodules.
  Qwen3ModelImpl(const Qwen3ModelImpl&) = delete;
  Qwen3ModelImpl& operator=(const Qwen3ModelImpl&) = delete;

  // ids: [B, S] int64 (int32 accepted) on the model's device.
  // Returns the hidden states after the final norm, [B, S, H] in the model dtype.
  // cache: optional. The S tokens take positions start_pos .. start_pos + S - 1
  //   (start_pos = kAppend: cache->length, or 0 without a cache); their keys/values are
  //   written into the cache there and attention covers [0, start_pos + S), causally.
  //   Requires start_pos <= cache->length, start_pos + S <= cache->max_length() and a
  //   batch size equal to the cache's. Afterwards cache->length = start_pos + S.
  // residuals: optional; cleared, then receives num_layers + 2 tensors [B, S, H]: the
  //   embedding output, the residual stream after each decoder layer, and the final-norm
  //   output (HF's hidden_states, except that the last entry is normed).
  at::Tensor Forward(const at::Tensor& ids, KvCache* cache = nullptr, int64_t start_pos = kAppend,
                     std::vector<at::Tensor>* residuals = nullptr);

  // hidden: [..., H] -> logits [..., V] through lm_head (the embedding matrix when tied).
  at::Tensor Logits(const at::Tensor& hidden);

  // Logits(Forward(ids, cache, start_pos)): [B, S, V].
  at::Tensor ForwardLogits(const at::Tensor& ids, KvCache* cache = nullptr,
                           int64_t start_pos = kAppend);

  // Pieces of Forward for layer-by-layer work (each [B, S, H] -> [B, S, H]).
  at::Tensor Embed(const at::Tensor& ids);
  // Runs decoder layer `layer` on positions start_pos .. start_pos + S - 1 without a cache.
  at::Tensor RunLayer(int64_t layer, const at::Tensor& x, int64_t start_pos = 0);
  at::Tensor FinalNorm(const at::Tensor& x);
  // cos/sin for positions start_pos .. start_pos + len - 1 on the model's device and dtype.
  RotaryTables Rope(int64_t start_pos, int64_t len) const;

  // An empty cache for `batch` sequences of up to `max_length` positions, in the model's
  // dtype and device (2 * layers * batch * Hkv * max_length * head_dim elements).
  KvCache NewKvCache(int64_t batch, int64_t max_length) const;

  // HF module names of every LinearLayer, in forward order:
  // "model.layers.{i}.self_attn.{q,k,v,o}_proj", "model.layers.{i}.mlp.{gate,up,down}_proj",
  // then "lm_head" on untied models (a tied lm_head is the embedding matrix, not a layer).
  std::vector<std::string> LinearNames() const;
  // The layer under `name`, or nullptr for an unknown name.
  std::shared_ptr<LinearLayer> GetLinear(const std::string& name) const;
  // Swaps the layer under `name` (Module::replace_module + the member pointer the forward
  // calls through). Throws c10::Error for an unknown name, a null layer or a layer whose
  // in/out features differ from the one it replaces.
  void ReplaceLinear(const std::string& name, std::shared_ptr<LinearLayer> layer);

  const Qwen3Config& config() const { return config_; }
  int64_t num_layers() const { return static_cast<int64_t>(model->layers.size()); }
  at::ScalarType dtype() const { return model->embed_tokens->weight.scalar_type(); }
  at::Device device() const { return model->embed_tokens->weight.device(); }
  bool tied() const { return config_.tie_word_embeddings; }

  std::shared_ptr<Qwen3Backbone> model;     // registered as "model"
  std::shared_ptr<LinearLayer> lm_head;     // registered as "lm_head"; nullptr when tied

 private:
  struct LinearSlot {
    torch::nn::Module* parent;             // the module that registers it
    std::string child;                     // its name there ("q_proj")
    std::shared_ptr<LinearLayer>* member;  // the pointer the forward calls through
  };
  std::map<std::string, LinearSlot> linear_slots_;
  std::vector<std::string> linear_names_;
  Qwen3Config config_;
};

TORCH_MODULE(Qwen3Model);

}  // namespace qatd::model

// `qat lora` (LoraSpec, issue #19): recovery LoRA adapters on a snapped checkpoint, trained by
// top-k KD (the seed's train_recovery_lora_multi.py).
#include "client/spec_commands.h"

namespace qatd::client {
namespace {

class LoraCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_lora(); }

  std::string Example() const override {
    return "qat lora --model ./Qwen3-0.6B --checkpoint <snapped checkpoint> --kd-cache <cache> --rank 16 "
           "--max-steps 1000 --wait\n"
           "  outputs: <output>/adapter (PEFT: adapter_config.json + adapter_model.safetensors), <output>/merged\n"
           "  (a Hugging Face folder with the adapters merged in 16-bit); then\n"
           "  qat infer --model ./Qwen3-0.6B --checkpoint <snapped checkpoint> --adapter <output>/adapter --prompt ...";
  }

  void AddFlags(SpecFlags& f) override {
    auto l = [this] { return spec_.mutable_lora(); };
    f.Path("--model,--model-id", "Base model: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [l](const std::string& v) { l()->set_model(v); });
    f.Path("--checkpoint", "The snapped V1 or V2 qatd checkpoint the adapters recover (required; its LUT, indices and "
                           "scales stay frozen)",
           [l](const std::string& v) { l()->set_checkpoint(v); });
    f.Path("--kd-cache-dir,--kd-cache", "KD cache directory (required)",
           [l](const std::string& v) { l()->set_kd_cache_dir(v); });
    f.Value<int>("--rank,-r", "LoRA rank r (default 16)", [l](const int& v) { l()->set_rank(v); });
    f.Value<double>("--alpha,--lora-alpha", "LoRA alpha; scaling = alpha / r (default 2 x rank)",
                    [l](const double& v) { l()->set_alpha(v); });
    f.Value<double>("--dropout,--lora-dropout", "Dropout on the adapters' input while training (default 0)",
                    [l](const double& v) { l()->set_dropout(v); });
    f.List<std::string>("--target-modules,--targets",
                        "Projections that get adapters: any of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj "
                        "(also: attn = q/k/v/o, mlp = gate/up/down, all; default all)",
                        [l](const std::vector<std::string>& v) {
                          for (const std::string& t : v) {
                            if (t == "attn" || t == "all") {
                              for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"}) l()->add_target_modules(n);
                            }
                            if (t == "mlp" || t == "all") {
                              for (const char* n : {"gate_proj", "up_proj", "down_proj"}) l()->add_target_modules(n);
                            }
                            if (t != "attn" && t != "mlp" && t != "all") l()->add_target_modules(t);
                          }
                        });
    f.Enum("--adapter-dtype",
           "Adapters' dtype: fp32 (default; the adapter path runs in fp32 over a bf16 model, AdamW keeps fp32 "
           "moments: the seed's --dtype fp32) or bf16 (bf16 adapters, bf16 AdamW moments, no fp32 master: half the "
           "optimizer memory; updates below half a bf16 ulp round away: the seed's --dtype bf16)",
           {{"fp32", v1::DTYPE_FP32}, {"bf16", v1::DTYPE_BF16}},
           [l](int v) { l()->set_adapter_dtype(static_cast<v1::Dtype>(v)); });
    f.Enum("--dtype", "The model's compute dtype (default auto = bf16 on CUDA, fp32 on the CPU)", kDtypeNames,
           [l](int v) { l()->set_dtype(static_cast<v1::Dtype>(v)); });
    f.Value<int>("--max-steps", "Optimizer steps (default 1000)", [l](const int& v) { l()->set_max_steps(v); });
    f.Value<int>("--batch-size", "Sequences per step, per device (default 8)", [l](const int& v) { l()->set_batch_size(v); });
    f.Value<int>("--grad-accum", "Micro-batches per step (default 1)", [l](const int& v) { l()->set_grad_accum(v); });
    f.Value<double>("--lr", "Learning rate (default 2e-4)", [l](const double& v) { l()->set_lr(v); });
    f.Value<double>("--weight-decay", "AdamW weight decay (default 0)", [l](const double& v) { l()->set_weight_decay(v); });
    f.Value<double>("--temperature", "KD temperature (default 2.0)", [l](const double& v) { l()->set_temperature(v); });
    f.Value<double>("--hard-top1-weight", "Weight of the hard top-1 term (default 0)",
                    [l](const double& v) { l()->set_hard_top1_weight(v); });
    f.Value<double>("--hard-full-weight", "Weight of the full-vocabulary hard term (default 0)",
                    [l](const double& v) { l()->set_hard_full_weight(v); });
    f.Flag("--cosine,!--no-cosine", "Cosine decay after warmup (default on)", [l](bool v) { l()->set_cosine(v); });
    f.Value<int>("--warmup-steps", "Warmup steps (default 0)", [l](const int& v) { l()->set_warmup_steps(v); });
    f.Value<double>("--min-lr-ratio", "Cosine floor as a fraction of lr (default 0.1)",
                    [l](const double& v) { l()->set_min_lr_ratio(v); });
    f.Value<double>("--clip-grad-norm", "Clip the gradient norm (default 0 = off)",
                    [l](const double& v) { l()->set_clip_grad_norm(v); });
    f.Value<int>("--logging-steps", "Steps between logged losses (default 20)",
                 [l](const int& v) { l()->set_logging_steps(v); });
    f.Value<int>("--eval-steps", "Steps between held-out evaluations (default 100)",
                 [l](const int& v) { l()->set_eval_steps(v); });
    f.Value<int>("--eval-samples", "Held-out sequences (the cache's last; default 40)",
                 [l](const int& v) { l()->set_eval_samples(v); });
    f.Value<int>("--save-steps", "Resume checkpoint every N steps (default 50)", [l](const int& v) { l()->set_save_steps(v); });
    f.Value<int>("--early-stop-patience", "Stop after N evaluations without improvement (default 0 = off)",
                 [l](const int& v) { l()->set_early_stop_patience(v); });
    f.Value<int64_t>("--seed", "Data order, adapter init and dropout masks (default 0)",
                     [l](const int64_t& v) { l()->set_seed(v); });
    f.Flag("--skip-merged", "Do not write <output>/merged", [l](bool v) { l()->set_skip_merged(v); });
    f.Enum("--merged-dtype", "Dtype of <output>/merged (default bf16)", {{"bf16", v1::DTYPE_BF16}, {"fp16", v1::DTYPE_FP16}},
           [l](int v) { l()->set_merged_dtype(static_cast<v1::Dtype>(v)); });
    f.Path("--output-dir,--output",
           "Where the adapters go (default: the job's directory; else a new or empty directory under one of the "
           "daemon's --allow-output-root)",
           [l](const std::string& v) { l()->set_output_dir(v); });
  }
};

}  // namespace

std::unique_ptr<SpecCommand> NewLoraCommand() { return std::make_unique<LoraCommand>(); }

}  // namespace qatd::client

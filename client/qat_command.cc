// `qat train`: QatSpec from the flags of train_anemll_qat.py (V1, spec §9.2) and, with --v2,
// train_v2_simple.py (spec §9.3). The LUT flags go to QuantSettings (V1) or QuantSettingsV2.
#include "client/spec_commands.h"

namespace qatd::client {
namespace {

class QatCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override {
    init_flag_.clear();
    spec.mutable_qat()->set_version(v2_ ? v1::QAT_VERSION_V2 : v1::QAT_VERSION_V1);
  }

  std::string Example() const override {
    return "qat train --model ./Qwen3-0.6B --kd-cache <cache> --train-scales --lut-size 16 --group-size 32 "
           "--scale-rank 4 --max-steps 500 --batch-size 32 --lr 1e-3\n"
           "  qat train --v2 --model ./Qwen3-0.6B --kd-cache <cache> --v2-checkpoint <q2-init> --train-mlp-only";
  }

  void AddFlags(SpecFlags& f) override {
    auto q = [this] { return spec_.mutable_qat(); };
    f.app()->add_flag("--v2", v2_,
                      "Train V2 layers (train_v2_simple.py): init with --v1-checkpoint (default), "
                      "--v2-checkpoint or --from-scratch; defaults become the V2 script's");
    f.Path("--model,--model-id", "Base model: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [q](const std::string& v) { q()->set_model(v); });
    f.Path("--kd-cache-dir,--kd-cache", "KD cache directory (required unless --skip-training)",
           [q](const std::string& v) { q()->set_kd_cache_dir(v); });
    f.Path("--init-state", "V1: checkpoint to start from (file or directory)", [this, q](const std::string& v) {
      if (v2_) Error("--init-state is a V1 flag; with --v2 use --v1-checkpoint or --v2-checkpoint");
      q()->set_init_state(v);
    });
    AddLutFlags(f);
    f.Path("--v1-checkpoint", "--v2: convert this V1 checkpoint (spec §5)", [this, q](const std::string& v) {
      NeedV2("--v1-checkpoint");
      SetInit(q(), v1::V2_INIT_FROM_V1, "--v1-checkpoint");
      q()->set_v1_checkpoint(v);
    });
    f.Path("--v2-checkpoint", "--v2: resume this V2 checkpoint (e.g. from qat convert q4-to-q2)",
           [this, q](const std::string& v) {
             NeedV2("--v2-checkpoint");
             SetInit(q(), v1::V2_INIT_FROM_V2, "--v2-checkpoint");
             q()->set_v2_checkpoint(v);
           });
    f.Flag("--from-scratch", "--v2: SVD init from the FP weights", [this, q](bool v) {
      if (!v) return;
      NeedV2("--from-scratch");
      SetInit(q(), v1::V2_INIT_FROM_SCRATCH, "--from-scratch");
    });
    f.Enum("--dtype", "Model dtype (default auto = on CUDA V1 bf16, V2 fp32; fp32 on the CPU)", kDtypeNames,
           [q](int v) { q()->set_dtype(static_cast<v1::Dtype>(v)); });
    f.Flag("--train-weights", "Train the latent weights", [q](bool v) { q()->set_train_weights(v); });
    f.Flag("--train-scales", "Train the scales (V2 always does)", [q](bool v) { q()->set_train_scales(v); });
    f.Flag("--train-g-only", "Train only the rank magnitudes", [q](bool v) { q()->set_train_g_only(v); });
    f.Flag("--train-lut",
           "V2: also train each layer's LUT values (4 or 16 per layer) with the same lr; the indices stay frozen "
           "and snaps use the trained values",
           [q](bool v) { q()->set_train_lut(v); });
    f.Flag("--kd-rand-neg",
           "KD over the cached top-K plus the cache's random negatives (a cache made with --rand-neg); held-out "
           "evaluation stays over the top-K",
           [q](bool v) { q()->set_kd_rand_neg(v); });
    f.Flag("--train-mlp-only,--mlp-only", "Train only the MLP layers", [q](bool v) { q()->set_train_mlp_only(v); });
    f.Value<int>("--max-steps", "Training steps (default 1000)", [q](const int& v) { q()->set_max_steps(v); });
    f.Value<int>("--batch-size", "Batch size (default V1 32, V2 8)", [q](const int& v) { q()->set_batch_size(v); });
    f.Value<double>("--lr", "Learning rate (default V1 1e-5, V2 5e-5)", [q](const double& v) { q()->set_lr(v); });
    f.Value<double>("--temperature", "KD temperature (default 2.0)", [q](const double& v) { q()->set_temperature(v); });
    f.Value<double>("--hard-top1-weight,--hard-top1", "Weight of the hard top-1 loss (default V1 0, V2 0.2)",
                    [q](const double& v) { q()->set_hard_top1_weight(v); });
    f.Value<double>("--hard-full-weight,--hard-full",
                    "Weight of the full-vocabulary hard loss (default V1 0.0005, V2 5e-5)",
                    [q](const double& v) { q()->set_hard_full_weight(v); });
    f.Value<int>("--logging-steps", "Steps between logged losses (default V1 50, V2 20)",
                 [q](const int& v) { q()->set_logging_steps(v); });
    f.Value<int>("--eval-steps", "Steps between evaluations (default V1 200, V2 100)",
                 [q](const int& v) { q()->set_eval_steps(v); });
    f.Value<int>("--eval-samples", "Sequences per evaluation (default 40)",
                 [q](const int& v) { q()->set_eval_samples(v); });
    f.Value<int>("--save-steps", "Steps between resume checkpoints (default 0 = the daemon's 50)",
                 [q](const int& v) { q()->set_save_steps(v); });
    f.Value<int>("--grad-accum", "Gradient accumulation steps (default 1)",
                 [q](const int& v) { q()->set_grad_accum(v); });
    f.Value<double>("--weight-decay", "AdamW weight decay (default 0.01)",
                    [q](const double& v) { q()->set_weight_decay(v); });
    f.Value<int>("--early-stop-patience", "Stop after this many evaluations without improvement (default 0 = off)",
                 [q](const int& v) { q()->set_early_stop_patience(v); });
    f.Flag("--cosine,!--no-cosine", "Cosine LR schedule (default V1 off, V2 on)", [q](bool v) { q()->set_cosine(v); });
    f.Value<int>("--warmup-steps", "LR warm-up steps (default V1 0, V2 100)",
                 [q](const int& v) { q()->set_warmup_steps(v); });
    f.Value<double>("--min-lr-ratio", "Cosine floor as a fraction of --lr (default 0.1)",
                    [q](const double& v) { q()->set_min_lr_ratio(v); });
    f.Value<double>("--clip-grad-norm", "Gradient norm clip (default 0 = off)",
                    [q](const double& v) { q()->set_clip_grad_norm(v); });
    f.Flag("--use-fp16", "Refused by the daemon (no fp16 grad scaler in qatd): use --dtype fp16 or bf16",
           [q](bool v) { q()->set_use_fp16(v); });
    f.Flag("--snap-weights", "V1: snap the weights to the LUT after training",
           [q](bool v) { q()->set_snap_weights(v); });
    f.Flag("--snap-bake-scales", "V1: with --snap-weights, bake the scales into the weights",
           [q](bool v) { q()->set_snap_bake_scales(v); });
    f.Flag("--skip-training", "Only load (--init-state) and snap/save", [q](bool v) { q()->set_skip_training(v); });
    f.Value<int64_t>("--seed", "Random seed (default 0)", [q](const int64_t& v) { q()->set_seed(v); });
    f.Path("--output-dir", "Where checkpoints go (default: the job's directory; else a new or empty directory under one of the daemon's --allow-output-root)",
           [q](const std::string& v) { q()->set_output_dir(v); });
  }

 private:
  // --lut-size etc. describe V1 layers, or with --v2 the V2 layers (QuantSettingsV2).
  void AddLutFlags(SpecFlags& f) {
    auto v1q = [this] { return spec_.mutable_qat()->mutable_quant(); };
    auto v2q = [this] { return spec_.mutable_qat()->mutable_quant_v2(); };
    f.Value<std::string>("--preset", "LUT preset: Q4_A4, Q2_A4, Q4_A4_R32, Q2_A2 (V2 default Q2_A4)",
                         [this, v1q, v2q](const std::string& v) { v2_ ? v2q()->set_preset(v) : v1q()->set_preset(v); });
    f.Value<int>("--lut-size", "LUT entries of the MLP layers (default V1 16, V2 4)",
                 [this, v1q, v2q](const int& v) { v2_ ? v2q()->set_lut_size(v) : v1q()->set_lut_size(v); });
    f.Value<int>("--group-size", "Weights per scale group (default 32)",
                 [this, v1q, v2q](const int& v) { v2_ ? v2q()->set_group_size(v) : v1q()->set_group_size(v); });
    f.Value<int>("--scale-rank", "Scale rank of the MLP layers (default V1 4, V2 32)",
                 [this, v1q, v2q](const int& v) { v2_ ? v2q()->set_scale_rank(v) : v1q()->set_scale_rank(v); });
    f.Value<int>("--attn-lut-size", "Attention LUT entries (default V1 = --lut-size, V2 16)",
                 [this, v1q, v2q](const int& v) { v2_ ? v2q()->set_attn_lut_size(v) : v1q()->set_attn_lut_size(v); });
    f.Value<int>(
        "--attn-scale-rank", "Attention scale rank (default V1 = --scale-rank, V2 8)",
        [this, v1q, v2q](const int& v) { v2_ ? v2q()->set_attn_scale_rank(v) : v1q()->set_attn_scale_rank(v); });
    f.Value<int>("--attn-group-size", "V1: attention group size (default = --group-size)", [this, v1q](const int& v) {
      V1Only("--attn-group-size");
      v1q()->set_attn_group_size(v);
    });
    f.Flag("--quantize-attn", "V1: also quantize attention (off in the seed; V2 always does)", [this, v1q](bool v) {
      V1Only("--quantize-attn");
      v1q()->set_quantize_attn(v);
    });
    f.Flag("--lut-include-zero", "V1: put an exact 0 into the LUT", [this, v1q](bool v) {
      V1Only("--lut-include-zero");
      v1q()->set_lut_include_zero(v);
    });
    f.Value<std::string>("--lut-init",
                         "V1: how each layer's LUT starts: uniform (the reference's grid) or kmeans (fitted to the "
                         "layer's own weights; lowers the 2-bit round-to-nearest error)",
                         [this, v1q](const std::string& v) {
                           V1Only("--lut-init");
                           v1q()->set_lut_init(v);
                         });
    f.Value<std::string>("--rounding",
                         "V1: how a fresh student's weights are rounded onto the LUT before training: nearest "
                         "(round W / S to the nearest entry) or gptq (GPTQ error feedback with each layer's input "
                         "Hessian from the KD cache's training split; lowers the PTQ error)",
                         [this, v1q](const std::string& v) {
                           V1Only("--rounding");
                           v1q()->set_rounding(v);
                         });
    f.Value<int>("--calibration-sequences", "V1: sequences GPTQ calibrates on with --rounding gptq (default 128)",
                 [this, v1q](const int& v) {
                   V1Only("--calibration-sequences");
                   v1q()->set_calibration_sequences(v);
                 });
    f.Flag("--quantize-lm-head", "V1: also quantize lm_head", [this, v1q](bool v) {
      V1Only("--quantize-lm-head");
      v1q()->set_quantize_lm_head(v);
    });
    f.Flag("--force-positive-scales", "V2: force positive scales (off in every V2 script)", [this, v2q](bool v) {
      NeedV2("--force-positive-scales");
      v2q()->set_force_positive_scales(v);
    });
    f.Enum("--magnitude-activation", "V2: rank magnitude activation (default identity)",
           {{"identity", v1::MAGNITUDE_ACTIVATION_IDENTITY},
            {"softplus", v1::MAGNITUDE_ACTIVATION_SOFTPLUS},
            {"abs", v1::MAGNITUDE_ACTIVATION_ABS}},
           [this, v2q](int v) {
             NeedV2("--magnitude-activation");
             v2q()->set_magnitude_activation(static_cast<v1::MagnitudeActivation>(v));
           });
    f.Value<double>("--magnitude-eps", "V2: epsilon added to the magnitudes (default 1e-6)",
                    [this, v2q](const double& v) {
                      NeedV2("--magnitude-eps");
                      v2q()->set_magnitude_eps(v);
                    });
    f.Value<double>("--norm-eps", "V2: floor on the column/row norms (default 1e-6)", [this, v2q](const double& v) {
      NeedV2("--norm-eps");
      v2q()->set_norm_eps(v);
    });
    f.Flag("--ste-fp16,!--no-ste-fp16", "V2: fp16 straight-through estimator (default on)", [this, v2q](bool v) {
      NeedV2("--ste-fp16");
      v2q()->set_use_ste_fp16(v);
    });
  }

  void NeedV2(const char* flag) {
    if (!v2_) Error(std::string(flag) + " applies to V2 training: add --v2");
  }
  void V1Only(const char* flag) {
    if (v2_) Error(std::string(flag) + " applies to V1 training only (V2 layers always quantize attention)");
  }
  // One of --v1-checkpoint / --v2-checkpoint / --from-scratch.
  void SetInit(v1::QatSpec* q, v1::V2Init init, const char* flag) {
    if (!init_flag_.empty() && init_flag_ != flag) {
      Error(init_flag_ + " and " + flag + " are mutually exclusive: pick one way to initialize V2");
    }
    init_flag_ = flag;
    q->set_v2_init(init);
  }

  bool v2_ = false;
  std::string init_flag_;
};

}  // namespace

std::unique_ptr<SpecCommand> NewQatCommand() { return std::make_unique<QatCommand>(); }

}  // namespace qatd::client

// `qat lbl`: LayerwiseSpec from the flags of the seed's train_anemll_lbl.py (spec §8.3).
#include "client/spec_commands.h"

namespace qatd::client {
namespace {

class LayerwiseCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_layerwise(); }

  std::string Example() const override {
    return "qat lbl --model ./Qwen3-0.6B --kd-cache-dir <cache> --lut-size 16 --group-size 32 --scale-rank 4 "
           "--scale-lr 1e-3 --scale-steps 100";
  }

  void AddFlags(SpecFlags& f) override {
    auto l = [this] { return spec_.mutable_layerwise(); };
    f.Path("--model", "Base model: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [l](const std::string& v) { l()->set_model(v); });
    f.Path("--kd-cache-dir,--kd-cache", "KD cache directory (required)",
           [l](const std::string& v) { l()->set_kd_cache_dir(v); });
    f.Path("--init-state", "Checkpoint to start from", [l](const std::string& v) { l()->set_init_state(v); });
    AddQuantFlags(f, [l] { return l()->mutable_quant(); });
    f.Enum("--dtype", "Model dtype (default auto = bf16 on CUDA, fp32 on the CPU)", kDtypeNames,
           [l](int v) { l()->set_dtype(static_cast<v1::Dtype>(v)); });
    f.Flag("--train-scales,!--no-train-scales", "Train the scales (default on)",
           [l](bool v) { l()->set_train_scales(v); });
    f.Flag("--train-weights", "Train the latent weights (the notebook's weight pass)",
           [l](bool v) { l()->set_train_weights(v); });
    f.Flag("--train-mlp-only", "Train only the MLP layers", [l](bool v) { l()->set_train_mlp_only(v); });
    f.Value<double>("--scale-lr,--lr", "Learning rate (default 1e-3)", [l](const double& v) { l()->set_lr(v); });
    f.Value<int>("--scale-batch-size,--batch-size", "Batch size, per rank with --devices N (default 32)",
                 [l](const int& v) { l()->set_batch_size(v); });
    f.Value<int>("--scale-epochs,--epochs", "Passes over the cache per layer (default 2)",
                 [l](const int& v) { l()->set_epochs_per_layer(v); });
    f.Value<int>("--scale-steps,--steps", "Steps per layer (default 0 = the epochs decide)",
                 [l](const int& v) { l()->set_steps_per_layer(v); });
    f.Value<int>("--grad-accum", "Gradient accumulation steps (default 1)",
                 [l](const int& v) { l()->set_grad_accum(v); });
    f.Value<double>("--temperature", "KD temperature (default 2.0)", [l](const double& v) { l()->set_temperature(v); });
    f.Value<double>("--local-weight", "Weight of the local MLP reconstruction loss (default 0.5)",
                    [l](const double& v) { l()->set_local_weight(v); });
    f.Value<double>("--global-weight", "Weight of the global KD loss (default 0.5)",
                    [l](const double& v) { l()->set_global_weight(v); });
    f.Value<int>("--local-tokens", "Tokens per sequence in the local loss (default 128)",
                 [l](const int& v) { l()->set_local_tokens(v); });
    f.Value<double>("--hard-top1-weight", "Weight of the hard top-1 loss (default 0)",
                    [l](const double& v) { l()->set_hard_top1_weight(v); });
    f.Value<double>("--hard-full-weight", "Weight of the full-vocabulary hard loss (default 0)",
                    [l](const double& v) { l()->set_hard_full_weight(v); });
    f.Value<int>("--eval-samples", "Sequences of the evaluation (default 100)",
                 [l](const int& v) { l()->set_eval_samples(v); });
    f.List<int>("--layers", "Layers to train, e.g. 0,1,2 (default all, in order)", [l](const std::vector<int>& v) {
      for (int layer : v) l()->add_layers(layer);
    });
    f.Value<int64_t>("--seed", "Random seed (default 0)", [l](const int64_t& v) { l()->set_seed(v); });
    f.Path("--output-dir,--save-quantized-dir", "Where the checkpoint goes (default: the job's directory; else a new or empty directory under one of the daemon's --allow-output-root)",
           [l](const std::string& v) { l()->set_output_dir(v); });
  }
};

}  // namespace

std::unique_ptr<SpecCommand> NewLayerwiseCommand() { return std::make_unique<LayerwiseCommand>(); }

}  // namespace qatd::client

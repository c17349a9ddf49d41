// `qat convert`, `qat snap`, `qat eval`: the stages that work on a trained checkpoint
// (convert_q4_to_q2.py spec §11, convert_v1_to_v2.py spec §5, snap_and_test_v2.py spec §10.2,
// the KD evaluation spec §7.3).
#include "client/spec_commands.h"

namespace qatd::client {
namespace {

class ConvertCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_convert(); }

  std::string Example() const override {
    return "qat convert q4-to-q2 --model ./Qwen3-0.6B --checkpoint <q4-checkpoint>\n"
           "  qat convert v1-to-v2 --model ./Qwen3-0.6B --checkpoint <v1-checkpoint> --lut-size 4 --scale-rank 8";
  }

  void AddFlags(SpecFlags& f) override {
    auto c = [this] { return spec_.mutable_convert(); };
    f.Enum("mode", "Conversion", {{"q4-to-q2", v1::CONVERT_MODE_Q4_TO_Q2}, {"v1-to-v2", v1::CONVERT_MODE_V1_TO_V2}},
           [c](int v) { c()->set_mode(static_cast<v1::ConvertMode>(v)); })
        ->required();
    f.Path("--model,--model-id", "Base model: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [c](const std::string& v) { c()->set_model(v); });
    f.Path("--checkpoint,--q4-checkpoint,--v1-checkpoint", "Checkpoint to convert (required)",
           [c](const std::string& v) { c()->set_checkpoint(v); });
    f.Value<int>("--q4-rank", "q4-to-q2: scale rank of the Q4 checkpoint (default 4; its config.json wins)",
                 [c](const int& v) { c()->set_q4_rank(v); });
    f.Value<int>("--q2-mlp-rank", "q4-to-q2: MLP scale rank of the Q2 model (default 32)",
                 [c](const int& v) { c()->set_q2_mlp_rank(v); });
    f.Value<int>("--q2-attn-rank", "q4-to-q2: attention scale rank of the Q2 model (default 8)",
                 [c](const int& v) { c()->set_q2_attn_rank(v); });
    f.Value<int>("--q2-mlp-lut-size", "q4-to-q2: MLP LUT entries of the Q2 model (default 4)",
                 [c](const int& v) { c()->set_q2_mlp_lut_size(v); });
    f.Value<int>("--q2-attn-lut-size", "q4-to-q2: attention LUT entries of the Q2 model (default 16)",
                 [c](const int& v) { c()->set_q2_attn_lut_size(v); });
    f.Value<std::string>("--q2-rounding",
                         "q4-to-q2: how the Q2 indices are chosen: nearest (default: the nearest LUT entry of W / S) or "
                         "gptq (GPTQ error feedback with each layer's input Hessian from --kd-cache-dir's training "
                         "sequences: all but the last --eval-samples; needs --kd-cache-dir)",
                         [c](const std::string& v) { c()->set_rounding(v); });
    f.Value<int>("--q2-calibration-sequences", "q4-to-q2: sequences GPTQ calibrates on with --q2-rounding gptq (default 128)",
                 [c](const int& v) { c()->set_calibration_sequences(v); });
    f.Value<std::string>("--q2-lut-init",
                         "q4-to-q2: each reduced (MLP) LUT: values (default: k-means of the 16 LUT values, the same for "
                         "every layer, spec 11) or kmeans (fitted to each layer's own W / S)",
                         [c](const std::string& v) { c()->set_lut_init(v); });
    // v1-to-v2 describes the source checkpoint with the V1 LUT flags.
    AddQuantFlags(f, [c] { return c()->mutable_source_quant(); });
    f.Flag("--eval", "Evaluate the converted model on --kd-cache-dir", [c](bool v) { c()->set_eval(v); });
    f.Value<int>("--eval-samples", "--eval: the cache's last sequences to score (default 40)",
                 [c](const int& v) { c()->set_eval_samples(v); });
    f.Path("--kd-cache-dir,--kd-cache,--cache-dir", "KD cache for --eval and --q2-rounding gptq",
           [c](const std::string& v) { c()->set_kd_cache_dir(v); });
    f.Path("--output-dir,--output", "Where the converted checkpoint goes (default: the job's directory; else a new or empty directory under one of the daemon's --allow-output-root)",
           [c](const std::string& v) { c()->set_output_dir(v); });
  }
};

class SnapCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_snap(); }

  std::string Example() const override {
    return "qat snap --model ./Qwen3-0.6B --checkpoint <v2-checkpoint> --fp16\n"
           "  qat snap --model ./Qwen3-0.6B --checkpoint <v1-checkpoint>        # V1: LUT snap\n"
           "The snap keeps the checkpoint's LUT sizes and ranks (its config.json; a seed .pt file is Q2_A4); "
           "--lut-bits, --attn-lut-bits, --scale-rank and --attn-scale-rank only state what you expect, and the "
           "daemon refuses a value that disagrees. It runs in bf16 on CUDA, fp32 on the CPU, and evaluates "
           "nothing (use qat eval on the result)";
  }

  void AddFlags(SpecFlags& f) override {
    auto s = [this] { return spec_.mutable_snap(); };
    f.Path("--model,--model-id", "Base model: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [s](const std::string& v) { s()->set_model(v); });
    f.Path("--checkpoint", "Checkpoint to snap: V2 (export or --ane snap) or V1 (LUT snap) (required)",
           [s](const std::string& v) { s()->set_checkpoint(v); });
    f.Value<int>("--lut-bits", "Check: the checkpoint's MLP LUT bits (refused if it has others)",
                 [s](const int& v) { s()->set_lut_bits(v); });
    f.Value<int>("--attn-lut-bits", "Check: the checkpoint's attention LUT bits (refused if it has others)",
                 [s](const int& v) { s()->set_attn_lut_bits(v); });
    f.Value<int>("--scale-rank", "Check: the checkpoint's MLP scale rank (refused if it has another)",
                 [s](const int& v) { s()->set_scale_rank(v); });
    f.Value<int>("--attn-scale-rank", "Check: the checkpoint's attention scale rank (refused if it has another)",
                 [s](const int& v) { s()->set_attn_scale_rank(v); });
    f.Flag("--fp16,--ane", "V2: snap for the ANE (fp16 weights with baked scales)", [s](bool v) { s()->set_fp16(v); });
    f.Flag("--test-generation,!--no-test-generation", "Greedy 128 tokens on 4 prompts afterwards (default on)",
           [s](bool v) { s()->set_test_generation(v); });
    f.Path("--output-dir,--output", "Where the snapped checkpoint goes (default: the job's directory; else a new or empty directory under one of the daemon's --allow-output-root)",
           [s](const std::string& v) { s()->set_output_dir(v); });
  }
};

class EvalCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_eval(); }

  std::string Example() const override {
    return "qat eval --model ./Qwen3-0.6B --checkpoint <checkpoint> --kd-cache <cache> --eval-samples 40";
  }

  void AddFlags(SpecFlags& f) override {
    auto e = [this] { return spec_.mutable_eval(); };
    f.Path("--model,--model-id", "Base model: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [e](const std::string& v) { e()->set_model(v); });
    f.Path("--checkpoint", "Checkpoint to evaluate (default: the unquantized model)",
           [e](const std::string& v) { e()->set_checkpoint(v); });
    f.Path("--adapter", "LoRA adapter folder applied on top (PEFT layout: a LORA job's <output>/adapter)",
           [e](const std::string& v) { e()->set_adapter(v); });
    f.Path("--kd-cache-dir,--kd-cache", "KD cache with the evaluation sequences (required)",
           [e](const std::string& v) { e()->set_kd_cache_dir(v); });
    f.Flag("--v2",
           "The checkpoint holds V2 layers: a qatd checkpoint's config.json decides (refused if it says V1); a seed "
           ".pt state_dict (e.g. train_v2_simple's v2_q2a4_fp32_*.pt) is loaded as V2 with the LUT sizes and ranks "
           "of its tensors. A seed V2 file without --v2 is refused. Example: qat eval --model ./Qwen3-0.6B "
           "--checkpoint runs/v2_output/best_state_dict.pt --v2 --kd-cache <cache>",
           [e](bool v) {
      if (v) e()->set_version(v1::QAT_VERSION_V2);
    });
    f.Value<int>("--eval-samples", "Sequences to evaluate (default 40)",
                 [e](const int& v) { e()->set_eval_samples(v); });
    f.Value<double>("--temperature", "KD temperature (default 2.0)", [e](const double& v) { e()->set_temperature(v); });
    f.Value<int>("--batch-size", "Batch size (default 8)", [e](const int& v) { e()->set_batch_size(v); });
    f.Enum("--dtype", "Model dtype (default auto = bf16 on CUDA, fp32 on the CPU)", kDtypeNames,
           [e](int v) { e()->set_dtype(static_cast<v1::Dtype>(v)); });
  }
};

}  // namespace

std::unique_ptr<SpecCommand> NewConvertCommand() { return std::make_unique<ConvertCommand>(); }
std::unique_ptr<SpecCommand> NewSnapCommand() { return std::make_unique<SnapCommand>(); }
std::unique_ptr<SpecCommand> NewEvalCommand() { return std::make_unique<EvalCommand>(); }

}  // namespace qatd::client

// `qat infer` (GenerateSpec; test_inference.py at HEAD, spec §13) and the hidden `qat probe`
// (ProbeSpec, a synthetic job for tests and smoke checks of a daemon).
#include "client/spec_commands.h"

namespace qatd::client {
namespace {

class GenerateCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_generate(); }

  std::string Example() const override {
    return "qat infer --model ./Qwen3-0.6B --checkpoint <checkpoint> --prompt \"What is 2+2?\"   (or --interactive)";
  }

  void AddFlags(SpecFlags& f) override {
    auto g = [this] { return spec_.mutable_generate(); };
    f.Path("--model,--model-id", "Base model: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [g](const std::string& v) { g()->set_model(v); });
    f.Path("--checkpoint", "Quantized checkpoint (default: the unquantized model)",
           [g](const std::string& v) { g()->set_checkpoint(v); });
    f.Path("--tokenizer", "tokenizer.json or its folder (default: --model)",
           [g](const std::string& v) { g()->set_tokenizer(v); });
    f.Value<std::string>("--prompt", "The user message (required unless --interactive)",
                         [g](const std::string& v) { g()->set_prompt(v); });
    f.Value<std::string>("--system-prompt", "System message (default \"You are a helpful assistant.\"; \"\" = none)",
                         [g](const std::string& v) { g()->set_system_prompt(v); });
    f.Flag("--template,!--no-template", "Wrap the prompt in the chat template (default on; --no-template = raw text)",
           [g](bool v) { g()->set_chat_template(v); });
    f.Flag("--thinking,!--no-thinking", "Let the model think (<think> block; default on)",
           [g](bool v) { g()->set_enable_thinking(v); });
    f.Value<int>("--max-new-tokens,--max-tokens", "Tokens to generate at most (default 256)",
                 [g](const int& v) { g()->set_max_new_tokens(v); });
    f.Flag("--sample", "Sample (temperature / top-p) instead of greedy decoding", [g](bool v) { g()->set_sample(v); });
    f.Value<double>("--temperature", "Sampling temperature (default 0.6)",
                    [g](const double& v) { g()->set_temperature(v); });
    f.Value<double>("--top-p", "Nucleus sampling mass (default 0.9)", [g](const double& v) { g()->set_top_p(v); });
    f.Value<double>("--repetition-penalty", "Repetition penalty (default 1.1)",
                    [g](const double& v) { g()->set_repetition_penalty(v); });
    f.Flag("--v2", "The checkpoint holds V2 layers", [g](bool v) {
      if (v) g()->set_version(v1::QAT_VERSION_V2);
    });
    f.Enum("--dtype", "Model dtype (default auto = bf16 on CUDA, fp32 on the CPU)", kDtypeNames,
           [g](int v) { g()->set_dtype(static_cast<v1::Dtype>(v)); });
    f.Value<int64_t>("--seed", "Sampling seed (default 0)", [g](const int64_t& v) { g()->set_seed(v); });
  }
};

class ProbeCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_probe(); }

  std::string Example() const override { return "qat probe --steps 20 --step-ms 100 --wait"; }

  void AddFlags(SpecFlags& f) override {
    auto p = [this] { return spec_.mutable_probe(); };
    f.Value<int>("--steps", "Progress/metric/log events to emit (default 10)",
                 [p](const int& v) { p()->set_steps(v); });
    f.Value<int>("--step-ms", "Milliseconds between steps (default 0)", [p](const int& v) { p()->set_step_ms(v); });
    f.Flag("--fail", "End with INTERNAL \"probe failure requested\"", [p](bool v) { p()->set_fail(v); });
    f.Flag("--ignore-cancel", "Never poll the cancel token (tests SIGKILL escalation)",
           [p](bool v) { p()->set_ignore_cancel(v); });
    f.Path("--output-dir", "Write probe.txt there as an artifact (default: the job's directory; else a new or empty directory under one of the daemon's --allow-output-root)",
           [p](const std::string& v) { p()->set_output_dir(v); });
  }
};

}  // namespace

std::unique_ptr<SpecCommand> NewGenerateCommand() { return std::make_unique<GenerateCommand>(); }
std::unique_ptr<SpecCommand> NewProbeCommand() { return std::make_unique<ProbeCommand>(); }

}  // namespace qatd::client

// `qat infer` (GenerateSpec; test_inference.py at HEAD, spec §13), its chat mode
// `--interactive` (one GenerateSession stream: one job, one model load, chat history) and the
// hidden `qat probe` (ProbeSpec, a synthetic job for tests and smoke checks of a daemon).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "client/render.h"
#include "client/spec_commands.h"
#include "client/submit.h"

namespace qatd::client {
namespace {

constexpr char kSessionHelp[] =
    "commands: /reset (forget the conversation), /system TEXT (new system prompt; forgets the conversation; "
    "/system alone = none), /exit (or quit, q, EOF)\n";

// What a line of the chat asks for.
struct ChatLine {
  enum Kind { kSkip, kEnd, kHelp, kInput, kUnknown } kind = kSkip;
  v1::SessionInput input;
};

ChatLine ParseChatLine(const std::string& line) {
  ChatLine out;
  const std::string text(absl::StripAsciiWhitespace(line));
  if (text.empty()) return out;
  if (text == "quit" || text == "exit" || text == "q" || text == "/exit" || text == "/quit") {
    out.kind = ChatLine::kEnd;
  } else if (text == "/help") {
    out.kind = ChatLine::kHelp;
  } else if (text == "/reset") {
    out.kind = ChatLine::kInput;
    out.input.set_reset(true);
  } else if (text == "/system" || absl::StartsWith(text, "/system ")) {
    out.kind = ChatLine::kInput;
    out.input.set_system_prompt(std::string(absl::StripAsciiWhitespace(text.substr(7))));
  } else if (text[0] == '/') {
    out.kind = ChatLine::kUnknown;
  } else {
    out.kind = ChatLine::kInput;
    out.input.set_user(text);
  }
  return out;
}

class GenerateCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_generate(); }

  std::string Example() const override {
    return "qat infer --model ./Qwen3-0.6B --checkpoint <checkpoint> --prompt \"What is 2+2?\"\n"
           "  qat infer --model ./Qwen3-0.6B --checkpoint <checkpoint> --interactive   (a chat: one job, the model "
           "loaded once; type /reset, /system TEXT, /exit)";
  }

  void AddFlags(SpecFlags& f) override {
    auto g = [this] { return spec_.mutable_generate(); };
    f.Path("--model,--model-id", "Base model: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [g](const std::string& v) { g()->set_model(v); });
    f.Path("--checkpoint", "Quantized checkpoint (default: the unquantized model)",
           [g](const std::string& v) { g()->set_checkpoint(v); });
    f.Path("--adapter", "LoRA adapter folder applied on top (PEFT layout: a LORA job's <output>/adapter)",
           [g](const std::string& v) { g()->set_adapter(v); });
    f.Path("--tokenizer", "tokenizer.json or its folder (default: --model)",
           [g](const std::string& v) { g()->set_tokenizer(v); });
    f.Value<std::string>("--prompt", "The user message (required unless --interactive, which reads them from stdin; with it, the first one)",
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

int GenerateInteractive(Connection& connection, const v1::JobSpec& spec, std::istream& in, const OutputOptions& out) {
  const bool tty = ::isatty(STDIN_FILENO) == 1;
  auto context = connection.StreamContext();
  auto stream = connection.stub().GenerateSession(context.get());
  v1::GenerateSessionRequest start;
  *start.mutable_start()->mutable_spec() = spec.generate();
  start.mutable_start()->mutable_spec()->clear_prompt();
  start.mutable_start()->set_priority(spec.priority());
  if (spec.has_resources()) *start.mutable_start()->mutable_resources() = spec.resources();
  v1::GenerateSessionResponse response;
  // The first response names the job; without it the stream failed (a bad spec, no daemon).
  if (!stream->Write(start) || !stream->Read(&response)) return connection.Report(stream->Finish());
  if (out.json) {
    std::printf("%s\n", ToJson(response, false).c_str());
  } else if (tty) {
    std::fprintf(stderr, "%s",
                 Paint(absl::StrFormat("[job %d: the model loads once for this chat] ", response.job_id()) + kSessionHelp,
                       Color::kDim, true)
                     .c_str());
  }
  std::fflush(stdout);
  bool open = true;  // the daemon still answers
  std::string line;
  std::string first = spec.generate().prompt();  // --prompt with -i: the chat's first message
  while (open) {
    if (!first.empty()) {
      line = std::move(first);
      first.clear();
    } else {
      if (tty) {
        std::fprintf(stderr, "> ");
        std::fflush(stderr);
      }
      if (!std::getline(in, line)) break;
    }
    const ChatLine chat = ParseChatLine(line);
    if (chat.kind == ChatLine::kEnd) break;
    if (chat.kind == ChatLine::kSkip) continue;
    if (chat.kind == ChatLine::kHelp || chat.kind == ChatLine::kUnknown) {
      std::fprintf(stderr, "%s%s", chat.kind == ChatLine::kUnknown ? "qat: unknown command; " : "", kSessionHelp);
      continue;
    }
    v1::GenerateSessionRequest request;
    *request.mutable_input() = chat.input;
    if (!stream->Write(request)) break;
    if (!chat.input.has_user()) {
      if (tty) std::fprintf(stderr, "%s\n", Paint("(conversation cleared)", Color::kDim, true).c_str());
      continue;
    }
    // The answer, until its turn_done.
    bool wrote_text = false;
    while (true) {
      if (!stream->Read(&response)) {
        open = false;
        break;
      }
      if (out.json) {
        std::printf("%s\n", ToJson(response, false).c_str());
      } else if (!response.text().text().empty()) {
        std::fwrite(response.text().text().data(), 1, response.text().text().size(), stdout);
        wrote_text = true;
      }
      std::fflush(stdout);
      if (response.has_turn_done()) break;
    }
    if (!out.json && (wrote_text || open)) std::printf("\n");
    std::fflush(stdout);
  }
  // Ending the stream ends the session: its job SUCCEEDS and the daemon ends the call.
  stream->WritesDone();
  while (stream->Read(&response)) {
    if (out.json) std::printf("%s\n", ToJson(response, false).c_str());
  }
  std::fflush(stdout);
  return connection.Report(stream->Finish());
}

std::unique_ptr<SpecCommand> NewGenerateCommand() { return std::make_unique<GenerateCommand>(); }
std::unique_ptr<SpecCommand> NewProbeCommand() { return std::make_unique<ProbeCommand>(); }

}  // namespace qatd::client

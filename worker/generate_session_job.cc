// GENERATE chat sessions (GenerateSpec.session; the GenerateSession RPC, `qat infer
// --interactive`): the worker loads the model once, then answers the session's inputs in order
// until the client ends it (SessionInput.end: the job SUCCEEDS), the daemon cancels it (the
// client went away), or no input comes for the task's session_idle_timeout_seconds (the job
// is CANCELLED saying so). Each turn streams its text, then reports the metrics
// generate/prompt_tokens, generate/dropped_turns, generate/tokens_per_second and, last,
// generate/tokens at step = the turn number: the daemon turns that last one into the
// client's TurnDone (server/qatd_service.cc).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/status_macros.h"
#include "core/infer/chat_session.h"
#include "core/jobs/generate_options.h"
#include "core/model/tokenizer.h"
#include "core/train/peft_adapter.h"
#include "core/train/student.h"
#include "worker/job_registry.h"

namespace qatd::worker {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status RunGenerateSession(const v1::WorkerTask& task, jobs::Reporter& reporter, infer::SessionInputs& inputs,
                                jobs::CancelToken& cancel) {
  QATD_ASSIGN_OR_RETURN(jobs::GenerateJobOptions o, jobs::GenerateJobOptions::FromProto(task.spec().generate(), &task));
  QATD_RETURN_IF_ERROR(o.Validate());
  QATD_ASSIGN_OR_RETURN(model::Tokenizer tok, model::Tokenizer::FromFile(o.tokenizer.empty() ? o.model : o.tokenizer));
  train::StudentOptions so;
  so.model_dir = o.model;
  so.checkpoint = o.checkpoint;
  so.quantize = !o.checkpoint.empty();
  so.device = o.device;
  so.dtype = o.dtype == jobs::Dtype::kAuto ? "auto" : jobs::DtypeName(o.dtype);
  QATD_ASSIGN_OR_RETURN(train::Student s, train::LoadStudent(so));
  std::unique_ptr<train::LoraAdapters> adapter;  // a LoRA adapter folder applied for the whole session
  if (!o.adapter.empty()) {
    QATD_ASSIGN_OR_RETURN(adapter, train::ApplyPeftAdapter(s, o.adapter));
  }
  if (cancel.cancelled()) return absl::CancelledError("cancelled while loading the model");

  infer::GenerationOptions go;
  go.max_new_tokens = o.max_new_tokens;
  go.repetition_penalty = o.repetition_penalty;
  go.seed = o.seed;
  if (o.sample) {
    go.temperature = o.temperature;
    go.top_p = o.top_p;
  }
  infer::ChatSession chat(s.model, &tok, infer::ChatHistory({o.system_prompt, o.chat_template, o.enable_thinking}),
                          go);
  reporter.Log(jobs::LogLevel::kInfo, "session: model loaded; waiting for the first message");

  const double idle_s = task.session_idle_timeout_seconds();
  auto last_input = Clock::now();
  int64_t turn = 0;
  while (true) {
    if (cancel.cancelled()) return absl::CancelledError("the session was cancelled");
    v1::SessionInput input;
    const infer::SessionInputs::Wait got = inputs.Next(std::chrono::milliseconds(200), &input);
    if (got == infer::SessionInputs::Wait::kClosed) {
      return absl::CancelledError("the daemon closed the session's input channel");
    }
    if (got == infer::SessionInputs::Wait::kTimeout) {
      if (idle_s > 0 && std::chrono::duration<double>(Clock::now() - last_input).count() >= idle_s) {
        return absl::CancelledError(absl::StrFormat(
            "the session was idle for %.0f s (the daemon's --session-idle-timeout); start a new one", idle_s));
      }
      continue;
    }
    switch (input.input_case()) {
      case v1::SessionInput::kEnd:
        reporter.Log(jobs::LogLevel::kInfo, absl::StrCat("session: ended by the client after ", turn, " turn(s)"));
        return absl::OkStatus();
      case v1::SessionInput::kReset:
        chat.history().Reset();
        reporter.Log(jobs::LogLevel::kInfo, "session: history cleared");
        break;
      case v1::SessionInput::kSystemPrompt:
        chat.history().SetSystemPrompt(input.system_prompt());
        reporter.Log(jobs::LogLevel::kInfo, "session: new system prompt; history cleared");
        break;
      case v1::SessionInput::kUser: {
        ++turn;
        QATD_ASSIGN_OR_RETURN(infer::TurnResult r, chat.Turn(input.user(), [&](const std::string& piece, int32_t id) {
                                reporter.Text(piece, id);
                                return !cancel.cancelled();
                              }));
        if (cancel.cancelled()) return absl::CancelledError("cancelled during generation");
        if (r.dropped_exchanges > 0) {
          reporter.Log(jobs::LogLevel::kWarning,
                       absl::StrCat("session: left out the ", r.dropped_exchanges,
                                    " oldest exchange(s) so that the prompt fits the model's positions"));
        }
        reporter.Metric("generate/prompt_tokens", turn, static_cast<double>(r.prompt_tokens));
        reporter.Metric("generate/dropped_turns", turn, static_cast<double>(r.dropped_exchanges));
        reporter.Metric("generate/tokens_per_second", turn, r.tokens_per_second);
        reporter.Metric("generate/tokens", turn, static_cast<double>(r.generated_tokens));  // the turn's end
        break;
      }
      case v1::SessionInput::INPUT_NOT_SET:
        break;
    }
    // Idle time counts from the end of the last answer: a long turn is not idleness.
    last_input = Clock::now();
  }
}

}  // namespace

void RegisterGenerateSession(JobRegistry& registry) {
  registry.RegisterSession(v1::JOB_KIND_GENERATE, RunGenerateSession);
}

}  // namespace qatd::worker

// qat: the thin gRPC client of qatd (DESIGN.md §1). Every subcommand turns its flags into one
// request, makes the call and prints the answer; see client/README.md for the tour.
//
// Exit codes: 0 ok, 1 job failed / RPC error, 2 usage or validation error, 3 cannot connect.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "client/connection.h"
#include "client/health_command.h"
#include "client/job_watch.h"
#include "client/queries.h"
#include "client/retention_commands.h"
#include "client/recipes.h"
#include "client/render.h"
#include "client/spec_commands.h"
#include "client/submit.h"
#include "qatd/build_info.h"

namespace qatd::client {
namespace {

constexpr char kTour[] = R"(Examples:
  qatd --data-dir ~/.qatd &                                  # the daemon (default 127.0.0.1:7433)
  qat server                                                 # version, devices, queue, job kinds
  qat cache --model ./Qwen3-0.6B --dataset alpaca.json --max-length 128 --top-k 64 --num-samples 2048
  qat train --model ./Qwen3-0.6B --kd-cache <cache> --train-scales --max-steps 500 --lr 1e-3 --wait
  qat pipeline run q4 --model ./Qwen3-0.6B --dataset alpaca.json --wait
  qat jobs --state running,queued
  qat watch 17          qat logs 17 -f          qat curve 17 --png loss.png
  qat infer --model ./Qwen3-0.6B --checkpoint <artifact> --prompt "What is 2+2?"
Exit codes: 0 ok, 1 job failed or RPC error, 2 usage/validation error, 3 cannot reach qatd.
)";

// " (flag --dataset)" for a daemon message that starts with a field path whose last part is
// a flag of `app` ("spec.kd_cache.dataset is required").
std::string FlagHint(CLI::App* app, const std::string& message) {
  std::string path = message.substr(0, message.find(' '));
  const size_t dot = path.rfind('.');
  std::string field = dot == std::string::npos ? path : path.substr(dot + 1);
  if (const size_t bracket = field.find('['); bracket != std::string::npos) field = field.substr(0, bracket);
  if (field.empty()) return "";
  std::string flag = "--";
  for (char c : field) flag.push_back(c == '_' ? '-' : c);
  if (app->get_option_no_throw(flag) == nullptr) return "";
  return " (flag " + flag + ")";
}

class Cli {
 public:
  Cli() : app_("qat: drive qatd, the LUT quantization-aware training daemon, over gRPC", "qat") {
    app_.require_subcommand(1);
    app_.fallthrough();
    app_.footer(kTour);
    AddConnectionFlags(&app_, &connection_options_);
    app_.set_version_flag("--version", std::string("qat ") + build::kVersionLine);
    app_.add_flag("--json", json_, "Print protobuf JSON (one object; streams: one per line) for scripts");
    AddSpecCommands();
    AddQueryCommands();
    AddPipelineCommands();
    CLI::App* health = AddHealthCommand(&app_, &health_);
    actions_.emplace_back(health, [this] { return RunHealth(connection_options_, health_, json_); });
  }

  int Run(int argc, char** argv) {
    try {
      app_.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      return app_.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
      return app_.exit(e);
    } catch (const CLI::CallForVersion& e) {
      return app_.exit(e);
    } catch (const CLI::ParseError& e) {
      if (std::string unknown = UnknownCommand(argc, argv); !unknown.empty()) {
        std::fprintf(stderr, "qat: %s\n", unknown.c_str());
        return kExitUsage;
      }
      std::fprintf(stderr, "qat: %s\nRun 'qat --help' or 'qat COMMAND --help' for the flags.\n", e.what());
      return kExitUsage;
    }
    out_.json = json_;
    out_.color = ColorsWanted() && !json_;
    out_.utf8 = Utf8Wanted();
    for (const auto& [app, run] : actions_) {
      if (app->parsed()) return run();
    }
    std::fprintf(stderr, "qat: no command given; run 'qat --help'\n");
    return kExitUsage;
  }

 private:
  // "unknown command 'rm' ..." when the words of the command line name no (sub)command, which
  // CLI11 reports only as "A subcommand is required"; "" otherwise. Values of flags that take
  // one (--address HOST:PORT) are skipped.
  std::string UnknownCommand(int argc, char** argv) {
    CLI::App* level = &app_;
    std::string path = "qat";
    for (int i = 1; i < argc; ++i) {
      const std::string word = argv[i];
      if (word == "--") break;
      if (word.rfind("-", 0) == 0) {
        const std::string name = word.substr(0, word.find('='));
        const CLI::Option* option = level->get_option_no_throw(name);
        if (option == nullptr && level != &app_) option = app_.get_option_no_throw(name);
        if (option != nullptr && word.find('=') == std::string::npos && option->get_expected_min() > 0) ++i;
        continue;
      }
      CLI::App* sub = nullptr;
      for (CLI::App* candidate : level->get_subcommands({})) {
        if (candidate->check_name(word)) sub = candidate;
      }
      if (sub == nullptr) {
        if (level->get_subcommands({}).empty()) return "";  // a positional argument of a command
        std::vector<std::string> names;
        for (CLI::App* candidate : level->get_subcommands({})) {
          if (!candidate->get_group().empty()) names.push_back(candidate->get_name());
        }
        std::string list;
        for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
        return "unknown command '" + word + "' for '" + path + "' (commands: " + list + "); run '" + path +
               " --help'";
      }
      level = sub;
      path += " " + word;
    }
    return "";
  }

  Connection& Connect(CLI::App* command) {
    connection_ = std::make_unique<Connection>(connection_options_);
    connection_->set_invalid_argument_hint([command](const std::string& m) { return FlagHint(command, m); });
    return *connection_;
  }

  SubmitOptions Submit(bool wait) const {
    SubmitOptions o;
    o.wait = wait;
    o.tty = StdoutIsTty();
    o.out = out_;
    return o;
  }

  static int UsageError(const absl::Status& status) {
    std::fprintf(stderr, "qat: %s\n", std::string(status.message()).c_str());
    return kExitUsage;
  }

  CLI::App* AddSpecCommand(const char* name, const char* help, std::unique_ptr<SpecCommand> command) {
    CLI::App* sub = app_.add_subcommand(name, help);
    command->Register(sub);
    SpecCommand* cmd = command.get();
    commands_.push_back(std::move(command));
    if (std::string(name) == "infer") {
      auto interactive = std::make_shared<bool>(false);
      sub->add_flag("--interactive,-i", *interactive,
                    "Chat: one session (one job, the model loaded once, the conversation kept); each stdin "
                    "line is a message; /reset forgets the conversation, /system TEXT sets the system prompt "
                    "(and forgets), /exit, quit or EOF ends. E.g. qat infer --model ./Qwen3-0.6B -i");
      actions_.emplace_back(sub, [this, sub, cmd, interactive] {
        absl::StatusOr<v1::JobSpec> spec = cmd->Build();
        if (!spec.ok()) return UsageError(spec.status());
        Connection& c = Connect(sub);
        if (!c.ok()) return c.exit_code();
        if (*interactive) return GenerateInteractive(c, *spec, std::cin, out_);
        return Generate(c, *spec, out_);
      });
      return sub;
    }
    auto wait = std::make_shared<bool>(false);
    sub->add_flag("--wait", *wait, "Follow the job like `qat watch` after submitting it (exit code: the job's)");
    auto from_job = std::make_shared<int64_t>(0);
    if (std::string(name) == "export") {
      sub->add_option("--from-job", *from_job,
                      "Export job ID's newest checkpoint artifact on the model its spec names (fills --checkpoint and "
                      "--model when they are not given)");
    }
    actions_.emplace_back(sub, [this, sub, cmd, wait, from_job] {
      absl::StatusOr<v1::JobSpec> spec = cmd->Build();
      if (!spec.ok()) return UsageError(spec.status());
      Connection& c = Connect(sub);
      if (!c.ok()) return c.exit_code();
      if (*from_job != 0) {
        if (absl::Status filled = FillExportFromJob(c, *from_job, spec->mutable_export_()); !filled.ok()) {
          if (absl::IsInvalidArgument(filled)) return UsageError(filled);
          // An RPC failure: exit as any failed call (3 when the daemon cannot be reached).
          return c.Report(grpc::Status(static_cast<grpc::StatusCode>(filled.code()), std::string(filled.message())));
        }
      }
      return SubmitJob(c, *spec, Submit(*wait));
    });
    return sub;
  }

  void AddSpecCommands() {
    AddSpecCommand("cache", "Build a KD cache of teacher top-k logits (KD_CACHE)", NewKdCacheCommand());
    AddSpecCommand("lbl", "Layer-by-layer QAT of scales/weights (LAYERWISE)", NewLayerwiseCommand());
    AddSpecCommand("train", "End-to-end QAT, V1 or --v2 (QAT)", NewQatCommand());
    AddSpecCommand("convert", "Convert a checkpoint: q4-to-q2 or v1-to-v2 (CONVERT)", NewConvertCommand());
    AddSpecCommand("snap", "Snap a checkpoint to its LUTs: V1 LUT snap, V2 export or --ane fp16 snap (SNAP)", NewSnapCommand());
    AddSpecCommand("eval", "KD loss of a checkpoint on cached sequences (EVAL)", NewEvalCommand());
    AddSpecCommand("infer", "Generate text, streamed as it is produced (GENERATE)", NewGenerateCommand());
    AddSpecCommand("export", "Write a checkpoint for other tools: a Hugging Face folder (--format hf) or LUT-palettized layers for ANEMLL (--format anemll) (EXPORT)", NewExportCommand());
    AddSpecCommand("lora", "Recovery LoRA adapters on a snapped checkpoint, trained by KD; PEFT files + a merged 16-bit folder (LORA)", NewLoraCommand());
    AddSpecCommand("probe", "(testing) a synthetic job that needs no model", NewProbeCommand())->group("");
  }

  // A subcommand with a required positional job id.
  CLI::App* AddIdCommand(const char* name, const char* help, int64_t* id, const std::string& example) {
    CLI::App* sub = app_.add_subcommand(name, help);
    sub->add_option("id", *id, "Job id")->required();
    sub->footer("Example:\n  " + example + "\n");
    return sub;
  }

  void AddQueryCommands() {
    CLI::App* server = app_.add_subcommand("server", "Daemon version, devices, memory, queue and job kinds");
    server->footer("Example:\n  qat server --address 10.0.0.5:7433 --token-file ~/.qatd-token\n");
    actions_.emplace_back(
        server, [this, server] { return WithConnection(server, [&](Connection& c) { return ShowServer(c, out_); }); });

    CLI::App* jobs = app_.add_subcommand("jobs", "List jobs, newest first");
    jobs->add_option("--state", jobs_query_.states, "Only these states (queued,running,succeeded,failed,cancelled)")
        ->delimiter(',');
    jobs->add_option("--kind", jobs_query_.kinds,
                     "Only these kinds (kd_cache,layerwise,qat,convert,snap,eval,generate,export,lora,probe)")
        ->delimiter(',');
    jobs->add_option("--pipeline", jobs_query_.pipeline_id, "Only the jobs of this pipeline");
    jobs->add_option("--limit", jobs_query_.limit, "Jobs per page (max 1000)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    jobs->add_option("--page-token", jobs_query_.page_token, "Continue a listing (printed after a full page)");
    jobs->add_flag("--all", jobs_query_.all, "Every page");
    jobs->footer("Example:\n  qat jobs --state running,queued --kind qat\n");
    actions_.emplace_back(jobs, [this, jobs] {
      return WithConnection(jobs, [&](Connection& c) { return ListJobs(c, jobs_query_, out_); });
    });

    CLI::App* status =
        AddIdCommand("status", "One job: state, times, progress, result, artifacts, spec", &job_id_, "qat status 17");
    actions_.emplace_back(status, [this, status] {
      return WithConnection(status, [&](Connection& c) { return ShowJob(c, job_id_, out_); });
    });

    CLI::App* watch = AddIdCommand("watch", "Follow a job: progress bar, loss, tokens/s, ETA; exit 0 iff it succeeds",
                                   &job_id_, "qat watch 17");
    actions_.emplace_back(watch, [this, watch] {
      return WithConnection(watch, [&](Connection& c) {
        return WatchJob(c, job_id_, Submit(true).tty ? WatchTty() : WatchPlain()).exit_code;
      });
    });

    CLI::App* logs = AddIdCommand("logs", "A job's log lines (stored history; -f follows until the job ends)", &job_id_,
                                  "qat logs 17 -f");
    logs->add_flag("--follow,-f", logs_.follow, "Keep following until the job ends");
    actions_.emplace_back(logs, [this, logs] {
      logs_.json = out_.json;
      logs_.color = out_.color;
      return WithConnection(logs, [&](Connection& c) { return PrintLogs(c, job_id_, logs_); });
    });

    CLI::App* cancel = AddIdCommand("cancel", "Cancel a job (queued: at once; running: SIGTERM, then SIGKILL)",
                                    &job_id_, "qat cancel 17 --reason \"wrong lr\"");
    cancel->add_option("--reason", cancel_reason_, "Recorded with the cancellation");
    actions_.emplace_back(cancel, [this, cancel] {
      return WithConnection(cancel, [&](Connection& c) { return CancelJob(c, job_id_, cancel_reason_, out_); });
    });

    CLI::App* del = app_.add_subcommand("delete", "Delete finished jobs: their history and <data-dir>/jobs/<id>/");
    del->add_option("ids", delete_.ids, "Job ids")->required();
    del->add_flag("--delete-outputs", delete_.delete_outputs,
                  "Also remove output dirs a spec named outside the data dir (only under an --allow-output-root)");
    del->add_flag("--dry-run,-n", delete_.dry_run, "Show what would be deleted and the space it would free");
    del->footer(
        "Queued or running jobs, and jobs a queued or running job depends on, are refused (nothing is deleted).\n"
        "Examples:\n  qat delete 12 13 --dry-run\n  qat delete 12\n");
    actions_.emplace_back(del, [this, del] {
      return WithConnection(del, [&](Connection& c) { return DeleteJobs(c, delete_, out_); });
    });

    CLI::App* prune = app_.add_subcommand("prune", "Delete the finished jobs that ended before some time");
    prune->add_option("--older-than", prune_.older_than, "Ended at least this long ago: 90s, 15m, 12h, 7d, 2w")
        ->required();
    prune->add_option("--state", prune_.states, "Only these states (default: failed,cancelled; also succeeded)")
        ->delimiter(',');
    prune->add_flag("--delete-outputs", prune_.delete_outputs,
                    "Also remove output dirs a spec named outside the data dir (only under an --allow-output-root)");
    prune->add_flag("--dry-run,-n", prune_.dry_run, "Show what would be deleted and the space it would free");
    prune->footer(
        "Jobs that a queued or running job depends on are skipped. The daemon also compacts finished jobs on its\n"
        "own (qatd --compact-after): see server/README.md, Retention.\n"
        "Examples:\n  qat prune --older-than 7d --dry-run\n  qat prune --older-than 30d --state failed,cancelled,succeeded\n");
    actions_.emplace_back(prune, [this, prune] {
      return WithConnection(prune, [&](Connection& c) { return PruneJobs(c, prune_, out_); });
    });

    CLI::App* curve = AddIdCommand("curve", "Loss curves: terminal chart, --csv, or --png FILE", &job_id_,
                                   "qat curve 17 --png loss.png");
    curve
        ->add_option("--metric", curve_.metrics,
                     "Series to show (repeatable or comma-separated; default loss/* and eval/kd)")
        ->delimiter(',');
    curve->add_flag("--csv", curve_.csv, "Print series,step,value CSV");
    curve->add_option("--png", curve_.png, "Write a PNG line plot to this file");
    curve->add_flag("--log", curve_.log_y, "One chart, logarithmic y axis, for every series");
    curve->add_flag("--one-axis", curve_.one_axis,
                    "One chart, linear y axis, for every series, even when their magnitudes differ by more than 30x");
    curve->add_option("--width", curve_.width,
                      "Terminal chart columns in all (default: the terminal's width, else $COLUMNS, else 100; at "
                      "most 150)");
    curve->add_option("--height", curve_.height, "Terminal chart rows (split charts share them)")->capture_default_str();
    curve->footer(
        "Series whose magnitudes differ by more than 30x (loss/hard_full ~11 vs loss/kd ~2.5e-5) would be flat\n"
        "lines on one linear axis, so by default each group of comparable series gets its own chart (a panel\n"
        "in the PNG); --log draws them all on one log axis instead, --one-axis on one linear axis.\n"
        "Examples:\n  qat curve 17\n  qat curve 17 --metric loss/kd,eval/kd --width 80 --height 12\n"
        "  qat curve 17 --log --png loss.png\n  qat curve 17 --csv > loss.csv\n");
    actions_.emplace_back(curve, [this, curve] {
      return WithConnection(curve, [&](Connection& c) { return ShowCurve(c, job_id_, curve_, out_); });
    });

    CLI::App* artifacts = app_.add_subcommand("artifacts", "Artifacts (checkpoints, caches, ...) with size and sha256");
    artifacts->add_option("id", artifacts_.job_id, "Job id (default: any job)");
    artifacts->add_option("--pipeline", artifacts_.pipeline_id, "Only the artifacts of this pipeline");
    artifacts->add_option("--kind", artifacts_.kind, "Only this kind (kd_cache, checkpoint, ...)");
    artifacts->footer("Example:\n  qat artifacts 17\n  qat artifacts --pipeline 3 --kind checkpoint\n");
    actions_.emplace_back(artifacts, [this, artifacts] {
      return WithConnection(artifacts, [&](Connection& c) { return ListArtifacts(c, artifacts_, out_); });
    });
  }

  void AddPipelineCommands() {
    CLI::App* pipeline = app_.add_subcommand("pipeline", "Multi-stage pipelines (DAGs of jobs)");
    pipeline->require_subcommand(1);
    pipeline->footer(
        "Example:\n  qat pipeline run q4 --model ./Qwen3-0.6B --dataset alpaca.json --steps-scale 0.1 --wait\n"
        "  qat pipeline status 3\n  qat pipeline list\n  qat pipeline cancel 3\n");

    CLI::App* run = pipeline->add_subcommand(
        "run",
        "Submit a built-in recipe (q4: cache, scales, weights, both, snap, infer; q2: cache, scales, convert, v2, "
        "snap, infer) or a PipelineSpec text-format file");
    run->add_option("source", pipeline_source_, "q4, q2, or FILE.textproto")->required();
    recipe_.Register(run);
    run->add_flag("--print", pipeline_print_, "Print the PipelineSpec (text format) instead of submitting it");
    run->add_flag("--wait", pipeline_wait_, "Follow every stage in order, then print a per-stage table");
    run->footer(
        "Example:\n  qat pipeline run q4 --model ./Qwen3-0.6B --dataset alpaca.json --wait\n"
        "  qat pipeline run q2 --model ./Qwen3-0.6B --kd-cache <cache> --print > q2.textproto\n"
        "  qat pipeline run q2.textproto\n");
    actions_.emplace_back(run, [this, run] {
      absl::StatusOr<v1::PipelineSpec> spec;
      if (const auto recipe = RecipeByName(pipeline_source_)) {
        spec = recipe_.Build(*recipe);
      } else if (std::filesystem::exists(pipeline_source_)) {
        spec = ReadPipelineFile(pipeline_source_);
      } else {
        return UsageError(absl::InvalidArgumentError("unknown pipeline '" + pipeline_source_ +
                                                     "': expected q4, q2 or a PipelineSpec .textproto file"));
      }
      if (!spec.ok()) return UsageError(spec.status());
      if (pipeline_print_) {
        std::printf("%s", PipelineText(*spec).c_str());
        return kExitOk;
      }
      return WithConnection(run, [&](Connection& c) { return SubmitPipeline(c, *spec, Submit(pipeline_wait_)); });
    });

    CLI::App* status = pipeline->add_subcommand("status", "A pipeline's state and its stages' jobs");
    status->add_option("id", pipeline_id_, "Pipeline id")->required();
    actions_.emplace_back(status, [this, status] {
      return WithConnection(status, [&](Connection& c) { return ShowPipeline(c, pipeline_id_, out_); });
    });

    CLI::App* list = pipeline->add_subcommand("list", "The newest pipelines: state and stages done");
    list->add_option("--limit", pipeline_limit_, "Pipelines to show")->capture_default_str()->check(CLI::Range(1, 1000));
    actions_.emplace_back(list, [this, list] {
      return WithConnection(list, [&](Connection& c) { return ListPipelines(c, pipeline_limit_, out_); });
    });

    CLI::App* cancel = pipeline->add_subcommand("cancel", "Cancel every stage of a pipeline that has not finished");
    cancel->add_option("id", pipeline_id_, "Pipeline id")->required();
    cancel->add_option("--reason", cancel_reason_, "Recorded with each cancellation");
    actions_.emplace_back(cancel, [this, cancel] {
      return WithConnection(cancel, [&](Connection& c) { return CancelPipeline(c, pipeline_id_, cancel_reason_, out_); });
    });
  }

  int WithConnection(CLI::App* command, const std::function<int(Connection&)>& body) {
    Connection& c = Connect(command);
    if (!c.ok()) return c.exit_code();
    return body(c);
  }

  WatchOptions WatchTty() const {
    WatchOptions w = WatchPlain();
    w.tty = !out_.json;
    return w;
  }
  WatchOptions WatchPlain() const {
    WatchOptions w;
    w.json = out_.json;
    w.color = out_.color;
    w.utf8 = out_.utf8;
    return w;
  }

  CLI::App app_;
  ConnectionOptions connection_options_;
  bool json_ = false;
  OutputOptions out_;
  std::unique_ptr<Connection> connection_;
  std::vector<std::unique_ptr<SpecCommand>> commands_;
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions_;
  int64_t job_id_ = 0;
  JobsQuery jobs_query_;
  LogsOptions logs_;
  std::string cancel_reason_;
  DeleteOptions delete_;
  PruneOptions prune_;
  CurveOptions curve_;
  ArtifactsQuery artifacts_;
  RecipeFlags recipe_;
  std::string pipeline_source_;
  bool pipeline_print_ = false;
  bool pipeline_wait_ = false;
  int64_t pipeline_id_ = 0;
  int pipeline_limit_ = 20;
  HealthOptions health_;
};

}  // namespace
}  // namespace qatd::client

int main(int argc, char** argv) {
  qatd::client::Cli cli;
  return cli.Run(argc, argv);
}

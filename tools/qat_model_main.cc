// qat-model: the local model utility (no daemon). Works on a Hugging Face Qwen3 directory:
// tokenize / detokenize / logits / generate / init / pretrain, plus demo-data (the built-in
// instruction dataset). Output is JSON (generate streams text), errors go to stderr with a
// non-zero exit code.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/cuda/fused_ops.h"
#include "core/infer/generate.h"
#include "core/common/reporter.h"
#include "tools/demo/demo_data.h"
#include "core/model/chat_template.h"
#include "core/model/model_io.h"
#include "core/model/qwen3_config.h"
#include "core/model/tokenizer.h"
#include "tools/demo/pretrain.h"
#include "nlohmann/json.hpp"

#ifndef QATD_SOURCE_DIR
#define QATD_SOURCE_DIR ""
#endif

namespace qatd::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The text input of tokenize/logits/generate: --text, else --file, else stdin.
struct TextInput {
  std::string text;
  std::string file;
  bool chat = false;
  bool no_thinking = false;
  bool no_generation_prompt = false;
  std::string system;

  void Add(CLI::App* cmd, const std::string& what) {
    cmd->add_option("--text,--prompt", text, absl::StrCat("The ", what, " (else --file, else stdin)"));
    cmd->add_option("--file", file, "Read the input from this file ('-' = stdin)");
    cmd->add_flag("--chat", chat,
                  "Render with the Qwen3 chat template. The input is a JSON array of {role, content} "
                  "messages, or plain text taken as one user message");
    cmd->add_option("--system", system, "With --chat and plain text: a system message to put first");
    cmd->add_flag("--no-thinking", no_thinking,
                  "With --chat: enable_thinking=false (pre-fills an empty <think></think> block)");
    cmd->add_flag("--no-generation-prompt", no_generation_prompt,
                  "With --chat: do not append the '<|im_start|>assistant' header");
  }

  absl::StatusOr<std::string> Resolve() const {
    std::string raw = text;
    if (raw.empty()) {
      QATD_ASSIGN_OR_RETURN(raw, ReadAll(file.empty() ? "-" : file));
    }
    if (!chat) return raw;
    std::vector<model::ChatMessage> messages;
    size_t first = raw.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && raw[first] == '[') {
      QATD_ASSIGN_OR_RETURN(messages, model::ParseChatMessagesJson(raw));
    } else {
      if (!system.empty()) messages.push_back({"system", system, std::nullopt});
      messages.push_back({"user", raw, std::nullopt});
    }
    model::ChatOptions options;
    options.add_generation_prompt = !no_generation_prompt;
    options.enable_thinking = !no_thinking;
    return model::RenderChat(messages, options);
  }
};

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_object() && j.contains("ids")) j = j["ids"];
  if (j.is_discarded() || !j.is_array())
    return absl::InvalidArgumentError("--ids: expected a JSON array of token ids (or {\"ids\": [...]})");
  std::vector<int32_t> ids;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer() || j[i].get<int64_t>() < 0 || j[i].get<int64_t>() > INT32_MAX)
      return absl::InvalidArgumentError(absl::StrCat("--ids: element ", i, " is not a token id"));
    ids.push_back(j[i].get<int32_t>());
  }
  return ids;
}

absl::StatusOr<model::Tokenizer> LoadTokenizer(const std::string& model_dir) {
  return model::Tokenizer::FromFile(model_dir);
}

absl::StatusOr<std::vector<int32_t>> CheckIds(std::vector<int32_t> ids, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= vocab)
      return absl::InvalidArgumentError(absl::StrCat("token id ", ids[i], " at position ", i,
                                                     " is outside the model's vocabulary of ", vocab));
  return ids;
}

absl::StatusOr<at::Device> ParseDevice(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  if (name == "cpu") return at::Device(at::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) return absl::FailedPreconditionError("--device cuda: no CUDA device available");
    return at::Device(name);
  }
  return absl::InvalidArgumentError(absl::StrCat("--device must be auto, cpu or cuda[:N], got '", name, "'"));
}

struct ModelArgs {
  std::string model;
  std::string dtype = "float32";
  std::string device = "auto";
  void Add(CLI::App* cmd) {
    cmd->add_option("--model", model, "Hugging Face Qwen3 directory (config.json, *.safetensors, tokenizer.json)")
        ->required();
    cmd->add_option("--dtype", dtype, "Compute dtype: float32, bfloat16 or float16")->capture_default_str();
    cmd->add_option("--device", device, "auto (CUDA when present), cpu, cuda or cuda:N")->capture_default_str();
  }
  absl::StatusOr<model::LoadedModel> Load() const {
    QATD_ASSIGN_OR_RETURN(at::ScalarType dt, model::ParseTorchDtype(dtype));
    QATD_ASSIGN_OR_RETURN(at::Device dev, ParseDevice(device));
    return model::LoadQwen3(model, {dt, dev});
  }
};

// ---- tokenize / detokenize ----------------------------------------------------------------

absl::Status RunTokenize(const std::string& model_dir, const TextInput& input, bool with_tokens) {
  QATD_ASSIGN_OR_RETURN(auto tok, LoadTokenizer(model_dir));
  QATD_ASSIGN_OR_RETURN(std::string text, input.Resolve());
  std::vector<int32_t> ids = tok.Encode(text);
  json out = {{"ids", ids}, {"count", ids.size()}};
  if (input.chat) out["text"] = text;
  if (with_tokens) {
    json tokens = json::array();
    for (int32_t id : ids) tokens.push_back(tok.IdToToken(id).value_or(""));
    out["tokens"] = tokens;
  }
  std::cout << out.dump() << "\n";
  return absl::OkStatus();
}

absl::Status RunDetokenize(const std::string& model_dir, const std::string& ids_text, const std::string& file,
                           bool skip_special) {
  QATD_ASSIGN_OR_RETURN(auto tok, LoadTokenizer(model_dir));
  std::string raw = ids_text;
  if (raw.empty()) {
    QATD_ASSIGN_OR_RETURN(raw, ReadAll(file.empty() ? "-" : file));
  }
  QATD_ASSIGN_OR_RETURN(auto ids, ParseIds(raw));
  QATD_ASSIGN_OR_RETURN(ids, CheckIds(std::move(ids), tok.vocab_size()));
  std::cout << json({{"text", tok.Decode(ids, skip_special)}}).dump() << "\n";
  return absl::OkStatus();
}

// ---- logits -------------------------------------------------------------------------------

absl::Status RunLogits(const ModelArgs& margs, const TextInput& input, const std::string& ids_text, int64_t top_k,
                       bool all_positions) {
  std::vector<int32_t> ids;
  std::optional<model::Tokenizer> tok;
  if (!ids_text.empty()) {
    QATD_ASSIGN_OR_RETURN(ids, ParseIds(ids_text));
  } else {
    QATD_ASSIGN_OR_RETURN(auto t, LoadTokenizer(margs.model));
    tok = std::move(t);
    QATD_ASSIGN_OR_RETURN(std::string text, input.Resolve());
    ids = tok->Encode(text);
  }
  if (ids.empty()) return absl::InvalidArgumentError("the input has no tokens");
  if (top_k < 1) return absl::InvalidArgumentError(absl::StrCat("--top-k must be >= 1, got ", top_k));
  QATD_ASSIGN_OR_RETURN(auto loaded, margs.Load());
  QATD_ASSIGN_OR_RETURN(ids, CheckIds(std::move(ids), loaded.config.vocab_size));
  return CatchTorch("logits", [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    auto model = loaded.model;
    model->eval();
    at::Tensor input_ids =
        at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).unsqueeze(0).to(model->device());
    at::Tensor hidden = model->Forward(input_ids);  // [1, S, H]
    if (!all_positions) hidden = hidden.slice(1, hidden.size(1) - 1);
    at::Tensor logits = model->Logits(hidden).to(at::kFloat).squeeze(0).cpu();  // [P, V]
    const int64_t k = std::min<int64_t>(top_k, logits.size(-1));
    auto [values, indices] = logits.topk(k, -1);
    at::Tensor lse = logits.logsumexp(-1);
    json positions = json::array();
    const int64_t first = all_positions ? 0 : static_cast<int64_t>(ids.size()) - 1;
    for (int64_t p = 0; p < logits.size(0); ++p) {
      json entry = {{"position", first + p}, {"logsumexp", lse[p].item<double>()}};
      json top = json::array();
      for (int64_t j = 0; j < k; ++j) {
        int64_t id = indices[p][j].item<int64_t>();
        json t = {{"id", id}, {"logit", values[p][j].item<double>()}};
        if (tok) t["token"] = tok->IdToToken(static_cast<int32_t>(id)).value_or("");
        top.push_back(t);
      }
      entry["top"] = top;
      positions.push_back(entry);
    }
    std::cout << json({{"ids", ids}, {"positions", positions}}).dump() << "\n";
    return absl::OkStatus();
  });
}

// ---- generate -----------------------------------------------------------------------------

absl::Status RunGenerate(const ModelArgs& margs, const TextInput& input, infer::GenerationOptions options,
                         bool json_out, bool ignore_eos) {
  QATD_ASSIGN_OR_RETURN(auto tok, LoadTokenizer(margs.model));
  QATD_ASSIGN_OR_RETURN(std::string text, input.Resolve());
  std::vector<int32_t> ids = tok.Encode(text);
  if (ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  QATD_ASSIGN_OR_RETURN(auto loaded, margs.Load());
  QATD_ASSIGN_OR_RETURN(ids, CheckIds(std::move(ids), loaded.config.vocab_size));
  if (!ignore_eos) {
    for (const char* stop : {"<|im_end|>", "<|endoftext|>"})
      if (auto id = tok.TokenToId(stop)) options.stop_token_ids.push_back(*id);
    if (loaded.config.eos_token_id >= 0) options.stop_token_ids.push_back(static_cast<int32_t>(loaded.config.eos_token_id));
  }
  QATD_RETURN_IF_ERROR(options.Validate());
  // Stream: decode the running suffix and print only complete UTF-8 text.
  std::vector<int32_t> generated;
  size_t printed = 0;
  auto on_token = [&](int32_t id) {
    generated.push_back(id);
    if (json_out) return true;
    std::string all = tok.Decode(generated, /*skip_special_tokens=*/true);
    // Hold back a trailing incomplete UTF-8 sequence (shown as U+FFFD by the decoder).
    size_t end = all.size();
    if (end >= 3 && all.compare(end - 3, 3, "\xEF\xBF\xBD") == 0) end -= 3;
    if (end > printed) {
      std::fwrite(all.data() + printed, 1, end - printed, stdout);
      std::fflush(stdout);
      printed = end;
    }
    return true;
  };
  QATD_ASSIGN_OR_RETURN(auto result, infer::Generate(loaded.model, ids, options, on_token));
  if (json_out) {
    std::cout << json({{"prompt_ids", ids},
                       {"ids", result.ids},
                       {"text", tok.Decode(result.ids, true)},
                       {"stop_reason", std::string(infer::StopReasonName(result.stop_reason))},
                       {"prefill_seconds", result.timings.prefill_seconds},
                       {"decode_tokens_per_second", result.timings.decode_tokens_per_second}})
                     .dump()
              << "\n";
  } else {
    std::string all = tok.Decode(generated, true);
    if (all.size() > printed) std::fwrite(all.data() + printed, 1, all.size() - printed, stdout);
    std::printf("\n");
    std::fprintf(stderr, "[%lld prompt + %lld generated tokens, stop: %s, %.1f tokens/s]\n",
                 static_cast<long long>(result.timings.prompt_tokens),
                 static_cast<long long>(result.timings.generated_tokens),
                 std::string(infer::StopReasonName(result.stop_reason)).c_str(),
                 result.timings.decode_tokens_per_second);
  }
  return absl::OkStatus();
}

// ---- init ---------------------------------------------------------------------------------

std::string DefaultTokenizerDir() {
  if (const char* env = std::getenv("QATD_TOKENIZER_DIR")) return env;
  return std::string(QATD_SOURCE_DIR) + "/tests/data/golden/qwen3-tokenizer";
}

absl::Status RunInit(const std::string& out_dir, model::Qwen3Config config, const std::string& tokenizer_dir,
                     uint64_t seed, double init_range, const std::string& dtype, bool force) {
  std::error_code ec;
  if (fs::exists(fs::path(out_dir) / "config.json", ec) && !force)
    return absl::AlreadyExistsError(absl::StrCat(out_dir, " already holds a model (config.json); pass --force to overwrite"));
  QATD_RETURN_IF_ERROR(config.Validate());
  QATD_ASSIGN_OR_RETURN(at::ScalarType save_dtype, model::ParseTorchDtype(dtype));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (!fs::exists(fs::path(tokenizer_dir) / f, ec))
      return absl::NotFoundError(absl::StrCat("--tokenizer ", tokenizer_dir, ": missing ", f));
  QATD_ASSIGN_OR_RETURN(auto tok, model::Tokenizer::FromFile(tokenizer_dir));
  if (config.vocab_size < tok.vocab_size())
    return absl::InvalidArgumentError(absl::StrCat("--vocab ", config.vocab_size, " is smaller than the tokenizer's ",
                                                   tok.vocab_size(), " ids"));
  if (auto eos = tok.TokenToId("<|im_end|>")) config.eos_token_id = *eos;
  if (auto bos = tok.TokenToId("<|endoftext|>")) config.bos_token_id = *bos;
  config.torch_dtype = model::TorchDtypeName(save_dtype);
  model::InitOptions init;
  init.seed = seed;
  init.initializer_range = init_range;
  QATD_ASSIGN_OR_RETURN(auto model, model::InitTinyQwen3(config, init));
  fs::create_directories(out_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  model::SaveOptions save;
  save.dtype = save_dtype;
  QATD_RETURN_IF_ERROR(model::SaveQwen3(model, config, out_dir, save));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(fs::path(tokenizer_dir) / f, fs::path(out_dir) / f, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("copying ", f, ": ", ec.message()));
  }
  json gen = {{"bos_token_id", config.bos_token_id}, {"eos_token_id", config.eos_token_id}, {"do_sample", false}};
  std::ofstream(fs::path(out_dir) / "generation_config.json") << gen.dump(2) << "\n";
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  std::cout << json({{"out", out_dir}, {"parameters", params}, {"seed", seed}, {"dtype", config.torch_dtype}}).dump()
            << "\n";
  return absl::OkStatus();
}

// ---- demo-data / pretrain ----------------------------------------------------------------

absl::Status RunDemoData(const std::string& out, int64_t records, uint64_t seed) {
  QATD_RETURN_IF_ERROR(kd::WriteDemoDataset(out, records, seed));
  const bool text = out.size() >= 4 && out.compare(out.size() - 4, 4, ".txt") == 0;
  std::error_code ec;
  std::cout << json({{"out", out},
                     {"records", records},
                     {"seed", seed},
                     {"format", text ? "plain" : "alpaca"},
                     {"bytes", static_cast<int64_t>(fs::file_size(out, ec))}})
                   .dump()
            << "\n";
  return absl::OkStatus();
}

// Stderr progress, but only every `log_every`-th training-loss point (and every evaluation).
class PretrainReporter : public jobs::StderrReporter {
 public:
  explicit PretrainReporter(int64_t log_every) : log_every_(log_every) {}
  void Metric(const std::string& name, int64_t step, double value) override {
    if (name == "pretrain/lr") return;
    if (name == "pretrain/loss" && !(step == 1 || (log_every_ > 0 && step % log_every_ == 0))) return;
    jobs::StderrReporter::Metric(name, step, value);
  }

 private:
  int64_t log_every_;
};

json StatsJson(const train::NextTokenStats& s) {
  return {{"positions", s.positions}, {"cross_entropy", s.cross_entropy}, {"entropy", s.entropy},
          {"top1_prob", s.top1_prob}, {"top1_accuracy", s.top1_accuracy}};
}

absl::Status RunPretrain(const train::PretrainOptions& options, int64_t log_every) {
  PretrainReporter reporter(log_every);
  jobs::CancelToken cancel;
  train::PretrainSummary sum;
  QATD_RETURN_IF_ERROR(train::Pretrain(options, reporter, cancel, &sum));
  std::cout << json({{"out", sum.output_dir},
                     {"steps", sum.steps},
                     {"train_records", sum.train_records},
                     {"heldout_records", sum.heldout_records},
                     {"train_blocks", sum.train_blocks},
                     {"eval_blocks", sum.eval_blocks},
                     {"active_vocab", sum.active_vocab},
                     {"first_loss", sum.first_loss},
                     {"last_loss", sum.last_loss},
                     {"heldout_before", StatsJson(sum.before)},
                     {"heldout_after", StatsJson(sum.after)},
                     {"train_seconds", sum.seconds},
                     {"tokens_per_second", sum.tokens_per_second}})
                   .dump()
            << "\n";
  return absl::OkStatus();
}

int Finish(const absl::Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "qat-model: error: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace
}  // namespace qatd::cli

int main(int argc, char** argv) {
  qatd::cuda::SetAllocatorDefaults();  // before any CUDA allocation
  using namespace qatd::cli;
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  CLI::App app{
      "qat-model: inspect and run Qwen3 models locally (no daemon).\n"
      "Works on a Hugging Face model directory (config.json, model.safetensors or sharded, tokenizer.json)."};
  app.require_subcommand(1);

  // tokenize
  auto* tokenize = app.add_subcommand("tokenize", "Text -> token ids (JSON). --chat renders messages with the chat template");
  std::string tok_model;
  TextInput tok_in;
  bool with_tokens = false;
  tokenize->add_option("--model,--tokenizer", tok_model, "Model or tokenizer directory (or tokenizer.json)")->required();
  tok_in.Add(tokenize, "text to tokenize");
  tokenize->add_flag("--tokens", with_tokens, "Also print the byte-level token strings");

  // detokenize
  auto* detok = app.add_subcommand("detokenize", "Token ids (JSON array) -> text (JSON)");
  std::string detok_model, detok_ids, detok_file;
  bool skip_special = false;
  detok->add_option("--model,--tokenizer", detok_model, "Model or tokenizer directory (or tokenizer.json)")->required();
  detok->add_option("--ids", detok_ids, "JSON array of ids, e.g. '[9707,11]' (else --file, else stdin)");
  detok->add_option("--file", detok_file, "Read the ids from this file ('-' = stdin)");
  detok->add_flag("--skip-special", skip_special, "Drop special tokens such as <|im_end|>");

  // logits
  auto* logits = app.add_subcommand("logits", "Top-k next-token logits of the last (or every) position, JSON");
  ModelArgs logit_model;
  TextInput logit_in;
  std::string logit_ids;
  int64_t top_k = 10;
  bool all_positions = false;
  logit_model.Add(logits);
  logit_in.Add(logits, "text to score");
  logits->add_option("--ids", logit_ids, "Score these token ids (JSON array) instead of text");
  logits->add_option("--top-k", top_k, "How many logits per position")->capture_default_str();
  logits->add_flag("--all-positions", all_positions, "Every position, not only the last");

  // generate
  auto* generate = app.add_subcommand("generate", "Generate text from a prompt, streamed to stdout");
  ModelArgs gen_model;
  TextInput gen_in;
  qatd::infer::GenerationOptions gen_opts;
  gen_opts.max_new_tokens = 128;
  bool gen_json = false, ignore_eos = false;
  gen_model.Add(generate);
  gen_in.Add(generate, "prompt");
  generate->add_option("--max-new-tokens", gen_opts.max_new_tokens, "Tokens to generate at most")->capture_default_str();
  generate->add_option("--temperature", gen_opts.temperature, "0 = greedy; > 0 samples")->capture_default_str();
  generate->add_option("--top-p", gen_opts.top_p, "Nucleus sampling mass in (0, 1]")->capture_default_str();
  generate->add_option("--top-k", gen_opts.top_k, "Sample among the k most likely tokens (0 = off)")->capture_default_str();
  generate->add_option("--repetition-penalty", gen_opts.repetition_penalty, "HF-style penalty (1 = off)")
      ->capture_default_str();
  generate->add_option("--seed", gen_opts.seed, "Sampling seed (reproducible)")->capture_default_str();
  generate->add_flag("--ignore-eos", ignore_eos, "Do not stop at <|im_end|>/<|endoftext|>/eos");
  generate->add_flag("--json", gen_json, "Print one JSON object (ids, text, timings) instead of streaming");

  // init
  auto* init = app.add_subcommand("init", "Write a random-init Qwen3 checkpoint in HF layout (for tests and demos)");
  std::string init_out, init_tok = DefaultTokenizerDir(), init_dtype = "bfloat16";
  qatd::model::Qwen3Config cfg;
  cfg.hidden_size = 64;
  cfg.intermediate_size = 192;
  cfg.num_hidden_layers = 2;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.head_dim = 16;
  cfg.vocab_size = 151936;
  cfg.max_position_embeddings = 512;
  cfg.rope_theta = 1e6;
  cfg.rms_norm_eps = 1e-6;
  cfg.tie_word_embeddings = true;
  uint64_t init_seed = 0;
  double init_range = 0.02;
  bool untied = false, force = false;
  init->add_option("--out", init_out, "Output directory")->required();
  init->add_option("--hidden", cfg.hidden_size, "hidden_size")->capture_default_str();
  init->add_option("--intermediate", cfg.intermediate_size, "intermediate_size")->capture_default_str();
  init->add_option("--layers", cfg.num_hidden_layers, "num_hidden_layers")->capture_default_str();
  init->add_option("--heads", cfg.num_attention_heads, "num_attention_heads")->capture_default_str();
  init->add_option("--kv-heads", cfg.num_key_value_heads, "num_key_value_heads")->capture_default_str();
  init->add_option("--head-dim", cfg.head_dim, "head_dim")->capture_default_str();
  init->add_option("--vocab", cfg.vocab_size, "vocab_size (>= the tokenizer's ids)")->capture_default_str();
  init->add_option("--max-positions", cfg.max_position_embeddings, "max_position_embeddings")->capture_default_str();
  init->add_flag("--untied", untied, "Separate lm_head instead of tied embeddings");
  init->add_option("--seed", init_seed, "Random seed")->capture_default_str();
  init->add_option("--init-range", init_range, "Std of the normal init (HF initializer_range)")->capture_default_str();
  init->add_option("--dtype", init_dtype, "Stored dtype: bfloat16, float16 or float32")->capture_default_str();
  init->add_option("--tokenizer", init_tok, "Directory with tokenizer.json + tokenizer_config.json to copy")
      ->capture_default_str();
  init->add_flag("--force", force, "Overwrite an existing model in --out");

  // demo-data
  auto* demo = app.add_subcommand("demo-data",
                                  "Write the built-in instruction dataset (arithmetic, capitals, opposites, ...)");
  demo->footer(
      "The records are generated from templates, deterministically from --records and --seed.\n"
      "A path ending in .txt gets plain text (one record per line), anything else an Alpaca\n"
      "JSON array (instruction/input/output) for --format alpaca_chat.\n"
      "Examples:\n"
      "  qat-model demo-data --out demo.json --records 2000 --seed 0\n"
      "  qat-model demo-data --out heldout.txt --records 200 --seed 1");
  std::string demo_out;
  int64_t demo_records = 2000;
  uint64_t demo_seed = 0;
  demo->add_option("--out", demo_out, "Output file (.json: Alpaca records; .txt: plain text lines)")->required();
  demo->add_option("--records,-n", demo_records, "Number of records")->capture_default_str();
  demo->add_option("--seed", demo_seed, "Generator seed (another seed gives held-out text)")->capture_default_str();

  // pretrain
  auto* pretrain = app.add_subcommand(
      "pretrain", "Briefly pretrain a (tiny) Qwen3 with next-token cross-entropy so it becomes a peaked teacher");
  pretrain->footer(
      "Renders and packs the dataset as the KD cache does, trains with AdamW (warmup + cosine)\n"
      "in fp32, and writes an HF directory (config.json, model.safetensors, tokenizer files,\n"
      "pretrain.json) atomically. Prints a JSON summary with held-out cross-entropy, entropy\n"
      "and top-1 probability before and after.\n"
      "Examples:\n"
      "  qat-model init --out tiny --seed 0\n"
      "  qat-model demo-data --out demo.json\n"
      "  qat-model pretrain --model tiny --dataset demo.json --out tiny-teacher\n"
      "  qat-model pretrain --model tiny --dataset notes.txt --format plain --steps 100 --out t2 --force");
  qatd::train::PretrainOptions pre;
  int64_t pre_log_every = 25;
  pretrain->add_option("--model", pre.model_dir, "Input HF Qwen3 directory (with tokenizer.json)")->required();
  pretrain->add_option("--out", pre.output_dir, "Output directory for the trained model")->required();
  pretrain->add_option("--dataset", pre.dataset, "Dataset file or directory (see --format)")->required();
  pretrain->add_option("--format", pre.format, "plain | alpaca | alpaca_chat | sharegpt")->capture_default_str();
  pretrain->add_option("--thinking", pre.thinking, "Chat formats: none | on | off | both")->capture_default_str();
  pretrain->add_option("--text-field", pre.text_field, "plain JSON records: the text field")->capture_default_str();
  pretrain->add_option("--text-unit", pre.text_unit, "plain .txt: line | paragraph | file")->capture_default_str();
  pretrain->add_option("--seq-len", pre.seq_len, "Tokens per packed block")->capture_default_str();
  pretrain->add_option("--batch-size", pre.batch_size, "Blocks per step")->capture_default_str();
  pretrain->add_option("--steps", pre.steps, "Optimizer steps")->capture_default_str();
  pretrain->add_option("--lr", pre.lr, "Peak learning rate")->capture_default_str();
  pretrain->add_option("--warmup", pre.warmup_steps, "Linear warmup steps")->capture_default_str();
  pretrain->add_option("--min-lr-ratio", pre.min_lr_ratio, "Cosine floor as a fraction of --lr")->capture_default_str();
  pretrain->add_option("--weight-decay", pre.weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
  pretrain->add_option("--grad-clip", pre.grad_clip, "Max gradient norm (0 = off)")->capture_default_str();
  pretrain->add_option("--vocab-sample", pre.vocab_sample,
                       "Sampled-softmax size: ids of the data + this many others per step (0 = exact full vocabulary)")
      ->capture_default_str();
  pretrain->add_option("--holdout", pre.holdout_fraction, "Fraction of records held out for evaluation")
      ->capture_default_str();
  pretrain->add_option("--eval-blocks", pre.eval_blocks, "Held-out blocks evaluated")->capture_default_str();
  pretrain->add_option("--eval-every", pre.eval_every, "Steps between evaluations (0 = before/after only)")
      ->capture_default_str();
  pretrain->add_option("--seed", pre.seed, "Seed of data order, split and vocabulary samples")->capture_default_str();
  pretrain->add_option("--threads", pre.threads, "CPU threads (0 = all cores; the tiny models run best on 1)")->capture_default_str();
  pretrain->add_option("--device", pre.device, "cpu, cuda or cuda:N")->capture_default_str();
  pretrain->add_option("--dtype", pre.save_dtype, "Stored dtype (float32, bfloat16, float16; default: the input's)");
  pretrain->add_option("--log-every", pre_log_every, "Print the training loss every N steps")->capture_default_str();
  pretrain->add_flag("--force", pre.overwrite, "Replace an existing --out (after training succeeded)");

  CLI11_PARSE(app, argc, argv);

  if (*demo) return Finish(RunDemoData(demo_out, demo_records, demo_seed));
  if (*pretrain) return Finish(RunPretrain(pre, pre_log_every));

  if (*tokenize) return Finish(RunTokenize(tok_model, tok_in, with_tokens));
  if (*detok) return Finish(RunDetokenize(detok_model, detok_ids, detok_file, skip_special));
  if (*logits) return Finish(RunLogits(logit_model, logit_in, logit_ids, top_k, all_positions));
  if (*generate) return Finish(RunGenerate(gen_model, gen_in, gen_opts, gen_json, ignore_eos));
  if (*init) {
    cfg.tie_word_embeddings = !untied;
    return Finish(RunInit(init_out, cfg, init_tok, init_seed, init_range, init_dtype, force));
  }
  return 0;
}

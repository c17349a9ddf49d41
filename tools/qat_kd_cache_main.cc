// qat-kd-cache: build a KD top-K cache from a local dataset without the daemon (the seed's
// scripts/precompute_teacher_topk.py). Flags keep the seed's names with dashes; every
// default comes from KdCacheOptions. Also converts reference `.pt` caches
// (--import-reference) and checks a cache (--verify).
//
// SIGINT/SIGTERM cancel cleanly: the sequences computed so far are made durable and the
// run can be continued with --resume.

#include <ATen/Parallel.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "core/cuda/fused_ops.h"
#include "core/jobs/kd_cache_job.h"
#include "core/common/reporter.h"
#include "core/kd/cache_reader.h"

namespace {

qatd::jobs::CancelToken* g_cancel = nullptr;

extern "C" void OnSignal(int) {
  if (g_cancel != nullptr) g_cancel->Cancel();  // a relaxed atomic store: async-signal-safe
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "\nqat-kd-cache: %s\n", s.ToString().c_str());
  return s.code() == absl::StatusCode::kCancelled ? 130 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  qatd::cuda::SetAllocatorDefaults();  // before any CUDA allocation
  qatd::jobs::KdCacheOptions o;
  // The options hold typed enums; the flags take their spellings (parsed after CLI11).
  std::string dataset_format = "plain", text_unit = "line", thinking = "none", dtype = "auto";
  CLI::App app{"Precompute teacher top-K logits for knowledge distillation (KD cache)."};
  app.option_defaults()->always_capture_default();
  app.add_option("--teacher-model-name-or-path,--model", o.teacher_model,
                 "Teacher model: a local Hugging Face Qwen3 folder (config.json + safetensors)");
  app.add_option("--tokenizer", o.tokenizer, "tokenizer.json or its folder (default: the teacher folder)");
  app.add_option("--dataset-name,--dataset", o.dataset,
                 "Local dataset: a .txt/.json/.jsonl file or a folder of them (sorted by name)");
  app.add_option("--dataset-format", dataset_format,
                 "plain (raw text), alpaca / alpaca_chat (instruction/input/output through the chat template), "
                 "sharegpt (conversations or messages)")
      ->check(CLI::IsMember({"plain", "alpaca", "alpaca_chat", "sharegpt"}));
  app.add_option("--dataset-text-field", o.dataset_text_field, "JSON field holding the text (plain format)");
  app.add_option("--text-unit", text_unit, "Sample unit of .txt files: line, paragraph or file")
      ->check(CLI::IsMember({"line", "paragraph", "file"}));
  app.add_option("--enable-thinking", thinking,
                 "Chat formats: none (template verbatim, as the reference), on, off (think blocks removed), "
                 "both (off then on: two different texts per sample); false/true = off/on")
      ->check(CLI::IsMember({"none", "on", "off", "both", "false", "true"}));
  app.add_flag("--shuffle,!--no-shuffle", o.shuffle, "Shuffle the records with --seed (the reference does); --no-shuffle keeps file order");
  app.add_option("--max-length", o.max_length, "L: tokens per packed sequence");
  app.add_option("--topk,--top-k", o.topk, "K: teacher logits kept per position");
  app.add_option("--rand-neg", o.rand_neg, "R: random non-top-K ids (and their logits) per position");
  app.add_option("--num-sequences,--num-samples", o.num_sequences, "Packed sequences to cache");
  app.add_option("--batch-size", o.batch_size, "Sequences per teacher forward");
  app.add_option("--shard-size", o.shard_size, "Sequences per shard file");
  app.add_option("--device", o.device, "auto (CUDA when present), cpu, cuda or cuda:N");
  app.add_option("--dtype", dtype, "Teacher compute dtype: auto (= bf16), bf16, fp16, fp32")
      ->check(CLI::IsMember({"auto", "bf16", "fp16", "fp32"}));
  app.add_option("--seed", o.seed, "Seed of the dataset shuffle and the random negatives");
  app.add_option("--logits-chunk-rows", o.logits_chunk_rows,
                 "Positions whose full-vocabulary logits exist at once (0 = the whole batch)");
  app.add_option("--num-threads", o.num_threads, "Tokenizer threads (0 = up to 8)");
  app.add_option("--output-dir", o.output_dir, "Cache directory to write");
  app.add_flag("--resume", o.resume, "Continue the cache in --output-dir after an interruption");
  app.add_flag("--overwrite", o.overwrite, "Replace a cache already in --output-dir");
  std::string import_from, verify;
  app.add_option("--import-reference", import_from,
                 "Convert the reference .pt cache in this folder into --output-dir and exit");
  app.add_option("--verify", verify, "Validate the cache in this folder (every shard, every id) and exit");
  CLI11_PARSE(app, argc, argv);
  {
    auto format = qatd::kd::ParseDatasetFormat(dataset_format);
    auto unit = qatd::kd::ParseTextUnit(text_unit);
    auto mode = qatd::kd::ParseThinkingMode(thinking);
    auto type = qatd::jobs::ParseDtype(dtype);
    for (const absl::Status& st : {format.status(), unit.status(), mode.status(), type.status()}) {
      if (!st.ok()) return Fail(st);
    }
    o.dataset_format = *format;
    o.text_unit = *unit;
    o.enable_thinking = *mode;
    o.dtype = *type;
  }

  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));

  if (!verify.empty()) {
    auto reader = qatd::kd::KdCacheReader::Open(verify, {false, true});
    if (!reader.ok()) return Fail(reader.status());
    std::printf("%s: %lld sequences, L=%lld K=%lld R=%lld, %zu shards%s: OK\n", verify.c_str(),
                static_cast<long long>((*reader)->num_sequences()), static_cast<long long>((*reader)->max_length()),
                static_cast<long long>((*reader)->top_k()), static_cast<long long>((*reader)->rand_neg()),
                (*reader)->shards().size(), (*reader)->is_reference_format() ? " (reference .pt)" : "");
    return 0;
  }
  if (!import_from.empty()) {
    if (o.output_dir.empty()) return Fail(absl::InvalidArgumentError("--import-reference needs --output-dir"));
    qatd::kd::ImportOptions io;
    io.overwrite = o.overwrite;
    auto n = qatd::kd::ImportReferenceCache(import_from, o.output_dir, io);
    if (!n.ok()) return Fail(n.status());
    std::printf("imported %lld sequences into %s\n", static_cast<long long>(*n), o.output_dir.c_str());
    return 0;
  }

  qatd::jobs::CancelToken cancel;
  g_cancel = &cancel;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  qatd::jobs::StderrReporter reporter;
  const absl::Status s = qatd::jobs::RunKdCache(o, reporter, cancel);
  g_cancel = nullptr;
  if (!s.ok()) return Fail(s);
  return 0;
}

#pragma once
// The KD_CACHE job (DESIGN.md §1; the seed's scripts/precompute_teacher_topk.py, spec §6):
// read a local dataset, render and pack it into blocks of L tokens, run the teacher, and
// write a sharded top-K cache (core/kd/cache_format.h) that training reads.
//
// Steps: Validate -> read + check the dataset (bad records reported; malformed files fail
// here, before any model work) -> tokenizer + config -> output_dir (new, --overwrite, or
// --resume: meta.json must match this request field by field) -> load the teacher ->
// stream batches through TeacherPipeline into KdCacheWriter.
//
// Resume: the sample stream is deterministic given the dataset, the options and the seed,
// so a continuation skips the n_written sequences already durable and goes on; a partial
// last shard is completed in place. With the same batch_size and device, the result is
// the same cache an uninterrupted run writes.
//
// Cancel (CancelToken): stops at the next batch boundary, makes every computed sequence
// durable (the current partial shard included) and returns CANCELLED; --resume continues.
//
// Reporter: Progress in "sequences" (rate and ETA), Metric "kd_cache/tokens_per_second",
// Log lines (bad records, summary), Artifact(output_dir, "kd_cache").

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/jobs/reporter.h"

namespace qatd::jobs {

struct KdCacheOptions {
  // Inputs. Names follow the seed's flags (spec §6.1), dashes for underscores.
  std::string teacher_model;   // --teacher-model-name-or-path: HF model directory (required)
  std::string tokenizer;       // --tokenizer: tokenizer.json or its directory; "" = teacher_model
  std::string dataset;         // --dataset-name: local file or directory (required)
  std::string dataset_format = "plain";  // plain | alpaca | alpaca_chat | sharegpt
  std::string dataset_text_field = "text";  // plain JSON records
  std::string text_unit = "line";           // plain .txt files: line | paragraph | file
  // none | on | off | both (seed spellings false=off, true=on). "none" reproduces the
  // reference's text (core/kd/render.h explains the modes).
  std::string enable_thinking = "none";
  bool shuffle = true;  // shuffle records with the seed (the reference always does)

  // Cache shape.
  int64_t max_length = 64;        // L
  int64_t topk = 32;              // K
  int64_t rand_neg = 0;           // R
  int64_t num_sequences = 20000;  // packed sequences to cache (fewer if the data runs out)
  int64_t batch_size = 1;
  int64_t shard_size = 1024;

  // Compute.
  std::string device = "auto";  // auto (cuda if available) | cpu | cuda | cuda:N
  std::string dtype = "auto";   // auto (= bf16) | bf16 | fp16 | fp32
  uint64_t seed = 0;
  int64_t logits_chunk_rows = 2048;  // rows of full-vocabulary logits at a time (0 = all)
  int num_threads = 0;               // tokenizer threads; 0 = min(8, hardware threads)

  // Output.
  std::string output_dir;  // required
  bool resume = false;
  bool overwrite = false;

  // Test seam: after this many shards are durable, stop as if the process had been killed
  // (nothing more is flushed) and return ABORTED. 0 = off.
  int64_t testing_crash_after_shards = 0;

  // INVALID_ARGUMENT naming the field and the allowed values for the first bad field.
  absl::Status Validate() const;
};

absl::Status RunKdCache(const KdCacheOptions& options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs

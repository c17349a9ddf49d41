#pragma once
// The KD_CACHE job's options (seed precompute_teacher_topk.py, spec §6.1).
// LibTorch-free (qatd_core_base): the daemon runs FromProto + Validate at submit time, the
// worker runs them again and hands the result to the job (core/jobs/*_job.h).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/common/durable_hook.h"
#include "core/jobs/options_common.h"
#include "core/kd/dataset.h"
#include "core/kd/render.h"
#include "qatd/v1/specs.pb.h"
#include "qatd/v1/worker.pb.h"

namespace qatd::train {
class DistGroup;
}

namespace qatd::jobs {

struct KdCacheOptions {
  // Inputs. Names follow the seed's flags (spec §6.1), dashes for underscores.
  std::string teacher_model;   // --teacher-model-name-or-path: HF model directory (required)
  std::string tokenizer;       // --tokenizer: tokenizer.json or its directory; "" = teacher_model
  std::string dataset;         // --dataset-name: local file or directory (required)
  // DATASET_FORMAT_AUTO in the spec is detected from the data (kd::DetectDatasetFormat) when
  // FromProto has a task (the worker); at submit time (no task) it stays kPlain here and
  // job_spec.cc detects it.
  kd::DatasetFormat dataset_format = kd::DatasetFormat::kPlain;
  std::string dataset_text_field = "text";  // plain JSON records
  kd::TextUnit text_unit = kd::TextUnit::kLine;  // plain .txt files
  // none | on | off | both (seed spellings false=off, true=on). "none" reproduces the
  // reference's text (core/kd/render.h explains the modes).
  kd::ThinkingMode enable_thinking = kd::ThinkingMode::kNone;
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
  Dtype dtype = Dtype::kAuto;   // auto = bf16 on CUDA, fp32 on the CPU (kd_cache_job.cc)
  uint64_t seed = 0;
  int64_t logits_chunk_rows = 2048;  // rows of full-vocabulary logits at a time (0 = all)
  int num_threads = 0;               // tokenizer threads; 0 = min(8, hardware threads)

  // Output.
  std::string output_dir;  // required
  bool resume = false;
  bool overwrite = false;

  // Test seam (core/common/durable_hook.h): called with the number of durable shards each time
  // one is; a non-OK status stops the job as if the process had been killed (nothing more is
  // flushed) and is returned.
  DurableHook after_durable;

  // Data parallel (kd_cache_job.h): this rank's group, not owned; null or a world of one = one
  // process writes every shard. Set by the worker (worker/data_parallel.h), not by FromProto.
  train::DistGroup* dist = nullptr;

  // INVALID_ARGUMENT naming the field and the allowed values for the first bad field.
  // The spec's fields over these defaults. `task` (null at submit time) places the job:
  // device, output directory, resume on a re-run.
  static absl::StatusOr<KdCacheOptions> FromProto(const v1::KdCacheSpec& spec, const v1::WorkerTask* task = nullptr);
  absl::Status Validate() const;
};

}  // namespace qatd::jobs

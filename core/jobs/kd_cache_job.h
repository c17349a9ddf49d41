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
#include "core/common/reporter.h"
#include "core/jobs/kd_cache_options.h"

namespace qatd::jobs {


absl::Status RunKdCache(const KdCacheOptions& options, Reporter& reporter, CancelToken& cancel);

}  // namespace qatd::jobs

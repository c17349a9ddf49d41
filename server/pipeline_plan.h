#pragma once
// Turns a PipelineSpec (a DAG of named stages) into the jobs the store inserts, and feeds
// upstream artifacts into downstream specs when a stage becomes ready.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/jobs/job_spec.h"
#include "qatd/v1/job.pb.h"
#include "storage/job_store.h"

namespace qatd::server {

// Validates the pipeline (unique stage names, known dependencies, no cycles, inputs naming a
// string field of the stage's spec, every stage spec valid with its fed fields exempt) and
// returns its jobs in a topological order (stable: ties keep the spec's order), with
// `depends_on` as indices into the returned vector. INVALID_ARGUMENT names the field
// ("spec.stages[2].inputs[0].field ...").
// `base` carries the daemon's path checks (its prefix and fed fields are set per stage).
absl::StatusOr<std::vector<storage::NewJob>> PlanPipeline(const v1::PipelineSpec& spec,
                                                          const jobs::SpecCheckContext& base = {});

// Sets the string field `field` of the spec's active job message (e.g. QatSpec.kd_cache_dir)
// to `value`. INVALID_ARGUMENT if there is no such singular string field.
absl::Status SetSpecField(v1::JobSpec& spec, const std::string& field, const std::string& value);

}  // namespace qatd::server

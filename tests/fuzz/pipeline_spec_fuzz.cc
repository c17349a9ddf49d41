// Pipeline specs as text (`qat pipeline run FILE.textproto`): the text-format parse the client
// runs (client/submit.cc ReadPipelineFile), then what the daemon runs on SubmitPipeline:
// PlanPipeline (server/pipeline_plan.cc: stage names, dependencies, cycles, artifact inputs),
// which validates every stage with jobs::ValidateJobSpec (core/jobs/job_spec.cc: ranges, enums,
// each kind's <Kind>Options::FromProto + Validate, path confinement). Input paths are not
// looked up (check_paths off: the fuzzer does not probe this host's files); confinement is on,
// against roots that do not exist.

#include <cstddef>
#include <cstdint>
#include <string>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "core/jobs/job_spec.h"
#include "server/pipeline_plan.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

class IgnoreErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  google::protobuf::TextFormat::Parser parser;
  IgnoreErrors errors;
  parser.RecordErrorsTo(&errors);
  qatd::v1::PipelineSpec spec;
  if (!parser.ParseFromString(std::string(reinterpret_cast<const char*>(data), size), &spec)) {
    qatd::fuzz::FuzzReport("text format", absl::InvalidArgumentError("not a PipelineSpec"));
    return 0;
  }

  qatd::jobs::SpecCheckContext context;
  context.check_paths = false;
  context.confine_paths = true;
  context.allowed_output_roots = {"/nonexistent/qatd-fuzz/out"};
  context.allowed_input_roots = {"/nonexistent/qatd-fuzz/in"};
  context.jobs_dir = "/nonexistent/qatd-fuzz/jobs";
  absl::StatusOr<std::vector<qatd::storage::NewJob>> jobs = qatd::server::PlanPipeline(spec, context);
  qatd::fuzz::FuzzReport("PlanPipeline", jobs.status());
  if (!jobs.ok()) {
    QATD_FUZZ_CHECK(absl::IsInvalidArgument(jobs.status()));
    return 0;
  }
  // A plan has every stage once, in an order where dependencies come first, and each artifact
  // input names a string field the daemon can fill in when the upstream stage is done.
  QATD_FUZZ_CHECK(static_cast<int>(jobs->size()) == spec.stages_size());
  for (size_t i = 0; i < jobs->size(); ++i) {
    qatd::storage::NewJob& job = (*jobs)[i];
    for (int64_t d : job.depends_on) QATD_FUZZ_CHECK(d >= 0 && static_cast<size_t>(d) < i);
    for (const qatd::v1::ArtifactInput& input : job.inputs) {
      QATD_FUZZ_CHECK(qatd::server::SetSpecField(job.spec, input.field(), "/nonexistent/qatd-fuzz/in/a").ok());
    }
  }
  return 0;
}

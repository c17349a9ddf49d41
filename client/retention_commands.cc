#include "client/retention_commands.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/render.h"
#include "core/common/duration.h"

namespace qatd::client {
namespace {

int Print(const v1::DeleteJobsResponse& response, bool dry_run, const OutputOptions& out) {
  if (out.json) {
    std::printf("%s\n", ToJson(response, true).c_str());
    return kExitOk;
  }
  const char* verb = dry_run ? "would delete" : "deleted";
  for (const v1::DeletedJob& job : response.jobs()) {
    std::printf("%s job %lld (%s): %s\n", verb, static_cast<long long>(job.job_id()), StateName(job.state()).c_str(),
                FormatBytes(job.bytes_freed()).c_str());
    for (const std::string& kept : job.kept_paths()) {
      std::printf("  kept %s (outside the data dir; --delete-outputs removes it when it is under an "
                  "--allow-output-root)\n",
                  kept.c_str());
    }
  }
  if (response.jobs_size() == 0) {
    std::printf("nothing to delete\n");
  } else {
    std::printf("%s %d job(s), %s %s\n", dry_run ? "would delete" : "deleted", response.jobs_size(),
                FormatBytes(response.bytes_freed()).c_str(), dry_run ? "would be freed" : "freed");
  }
  return kExitOk;
}

}  // namespace

int DeleteJobs(Connection& connection, const DeleteOptions& options, const OutputOptions& out) {
  v1::DeleteJobsRequest request;
  for (int64_t id : options.ids) request.add_job_ids(id);
  request.set_delete_outputs(options.delete_outputs);
  request.set_dry_run(options.dry_run);
  v1::DeleteJobsResponse response;
  const grpc::Status status = connection.stub().DeleteJobs(connection.UnaryContext().get(), request, &response);
  if (!status.ok()) return connection.Report(status);
  return Print(response, options.dry_run, out);
}

int PruneJobs(Connection& connection, const PruneOptions& options, const OutputOptions& out) {
  absl::StatusOr<int64_t> ms = ParseDurationMs(options.older_than);
  if (!ms.ok() || *ms < 1000) {
    std::fprintf(stderr, "qat: --older-than: %s\n",
                 ms.ok() ? "must be at least 1s" : std::string(ms.status().message()).c_str());
    return kExitUsage;
  }
  v1::PruneJobsRequest request;
  request.set_older_than_seconds(*ms / 1000);
  for (const std::string& s : options.states) {
    const auto state = ParseState(s);
    if (!state || !IsTerminal(*state)) {
      std::fprintf(stderr, "qat: --state: '%s' is not a finished state; expected succeeded, failed, cancelled\n",
                   s.c_str());
      return kExitUsage;
    }
    request.add_states(*state);
  }
  request.set_delete_outputs(options.delete_outputs);
  request.set_dry_run(options.dry_run);
  v1::DeleteJobsResponse response;
  const grpc::Status status = connection.stub().PruneJobs(connection.UnaryContext().get(), request, &response);
  if (!status.ok()) return connection.Report(status);
  return Print(response, options.dry_run, out);
}

}  // namespace qatd::client

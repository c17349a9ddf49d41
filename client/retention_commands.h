#pragma once
// `qat delete` and `qat prune`: removing finished jobs and the files they wrote
// (server/retention.h has the rules).

#include <cstdint>
#include <string>
#include <vector>

#include "client/connection.h"
#include "client/queries.h"

namespace qatd::client {

struct DeleteOptions {
  std::vector<int64_t> ids;
  bool delete_outputs = false;  // also output dirs outside the data dir (under an allowed root)
  bool dry_run = false;
};
int DeleteJobs(Connection& connection, const DeleteOptions& options, const OutputOptions& out);

struct PruneOptions {
  std::string older_than;           // "7d", "12h", ...
  std::vector<std::string> states;  // default (empty): failed, cancelled
  bool delete_outputs = false;
  bool dry_run = false;
};
int PruneJobs(Connection& connection, const PruneOptions& options, const OutputOptions& out);

}  // namespace qatd::client

#pragma once
// The worker process (`qatd worker --job-file F --event-fd N`): reads its WorkerTask, runs the
// job function of its kind with a PipeReporter on fd N, and ends the stream with the job's
// final status. SIGTERM/SIGINT cancel the job cooperatively (CancelToken).
//
// Exit codes: 0 = the final status was delivered (whatever it says); 2 = unreadable task;
// 3 = the daemon was gone before the final status could be sent.

#include <string>

#include "server/job_registry.h"

namespace qatd::server {

struct WorkerArgs {
  std::string job_file;
  int event_fd = 3;
};

int RunWorker(const WorkerArgs& args, const JobRegistry& registry);

}  // namespace qatd::server

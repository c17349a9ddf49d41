#pragma once
// Running a short external command and capturing its output: the seam between the Slurm
// executor (server/slurm_launcher.h) and `sbatch`, `scontrol`, `squeue`, `sacct`, `scancel`, so
// that unit tests check the command lines without a cluster.

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qatd::server {

struct CommandResult {
  int exit_code = 0;   // 128 + N when killed by signal N
  std::string out;     // stdout
  std::string err;     // stderr
};

class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  // Runs argv[0] (looked up on $PATH) with the daemon's environment plus `extra_env`
  // ("NAME=value", replacing a variable of the same name) and stdin from /dev/null. An error
  // only when it could not run at all or did not end within `timeout` (then it was killed).
  virtual absl::StatusOr<CommandResult> Run(const std::vector<std::string>& argv,
                                            const std::vector<std::string>& extra_env,
                                            std::chrono::milliseconds timeout) = 0;
};

// fork + exec; thread-safe.
class ExecCommandRunner : public CommandRunner {
 public:
  absl::StatusOr<CommandResult> Run(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
                                    std::chrono::milliseconds timeout) override;
};

}  // namespace qatd::server

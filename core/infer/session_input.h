#pragma once
// Where a chat session job (GenerateSpec.session) gets its inputs: the user's messages and
// commands (proto/qatd/v1/specs.proto SessionInput), in the order the client sent them. The
// worker fills one from the daemon's control channel (worker/session_inbox.h); tests fill
// their own. Header-only and LibTorch-free.

#include <chrono>

#include "qatd/v1/specs.pb.h"

namespace qatd::infer {

class SessionInputs {
 public:
  enum class Wait {
    kInput,    // *input holds the next one
    kTimeout,  // nothing arrived within the timeout
    kClosed,   // no input will ever come (the daemon closed the channel)
  };
  virtual ~SessionInputs() = default;
  // Blocks at most `timeout` for the next input.
  virtual Wait Next(std::chrono::milliseconds timeout, v1::SessionInput* input) = 0;
};

}  // namespace qatd::infer

#pragma once
// Helpers of the fuzz harnesses. QATD_FUZZ_CHECK: an invariant of a harness; when it does not
// hold, print it and abort, which libFuzzer reports as a crash (with the input that caused it).
// FuzzReport: with QATD_FUZZ_VERBOSE=1 in the environment, prints how a parse ended (to see how
// far a seed gets; silent otherwise, as fuzzing runs need).

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"

#define QATD_FUZZ_CHECK(cond)                                                                \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

namespace qatd::fuzz {

inline void FuzzReport(const char* what, const absl::Status& status) {
  static const bool verbose = std::getenv("QATD_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
}

}  // namespace qatd::fuzz

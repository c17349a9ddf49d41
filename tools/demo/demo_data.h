#pragma once
// A small built-in instruction dataset, generated from templates (nothing is downloaded).
//
// Used to pretrain the tiny teacher of the tests and the demo (tools/demo/pretrain.h) and as
// KD-cache input. Every record follows one of a dozen learnable patterns with a fixed answer
// shape, e.g.
//   "What is 7 plus 5?"                      -> "7 plus 5 is 12."
//   "What is the capital of France?"         -> "The capital of France is Paris."
//   "Spell the word cat backwards."          -> "Backwards, cat is t a c."
//   "Add the numbers." + input "4 and 9"     -> "4 plus 9 is 13."
// (arithmetic, capitals, opposites, colours of things, counting, spelling backwards, short
// definitions, plurals, the next letter or number, number words, sorting, animal sounds).
//
// Determinism: the records are a pure function of (n, seed) on every platform — the random
// choices use splitmix64 and unbiased rejection sampling, not <random>'s distributions,
// whose algorithms are unspecified. Different seeds give different mixes of the same
// patterns (use another seed for held-out text).
//
// Torch-free; thread-safe (plain functions over values).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace qatd::kd {

struct DemoRecord {
  std::string instruction;
  std::string input;  // often empty
  std::string output;
};

// Limits of `n` (records per dataset).
inline constexpr int64_t kMinDemoRecords = 1;
inline constexpr int64_t kMaxDemoRecords = 1000000;

// `n` records (n in [kMinDemoRecords, kMaxDemoRecords]; out-of-range n is clamped).
std::vector<DemoRecord> GenerateDemoRecords(int64_t n, uint64_t seed);

// The records as an Alpaca JSON array of {"instruction", "input", "output"} objects (the
// "alpaca" / "alpaca_chat" format of core/kd/dataset.h), pretty-printed, trailing newline.
std::string DemoRecordsToAlpacaJson(const std::vector<DemoRecord>& records);

// One record as a line of plain text: "{instruction} Input: {input}. Answer: {output}" (the
// input part omitted when empty). Never contains a newline.
std::string DemoRecordText(const DemoRecord& record);

// Writes GenerateDemoRecords(n, seed) to `path`: a path ending in ".txt" gets plain text, one
// record per line (DemoRecordText; read it with format "plain", text unit "line"); any other
// path gets the Alpaca JSON array. The parent directory must exist. Written atomically (temp
// file, fsync, rename). Errors: INVALID_ARGUMENT for n out of range (naming it),
// INTERNAL/PERMISSION_DENIED for I/O, naming the path.
absl::Status WriteDemoDataset(const std::string& path, int64_t n, uint64_t seed);

}  // namespace qatd::kd

#pragma once
// Helpers for the anemll_ref golden-vector tests (tests/data/golden/anemll_ref, README there).

#include <ATen/ATen.h>

#include <fstream>
#include <sstream>
#include <string>

#include "core/quant/tensor_io.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qatd::quant::testing {

inline std::string GoldenDir() { return std::string(QATD_TEST_DATA) + "/golden/anemll_ref"; }

// All tensors of one golden safetensors file (CPU). Fails the test when unreadable.
inline TensorMap LoadGolden(const std::string& file) {
  auto loaded = ReadTensorMap(GoldenDir() + "/" + file);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded.ok() ? loaded->tensors : TensorMap{};
}

// `name` from `m`; an empty tensor plus a test failure when absent.
inline at::Tensor Get(const TensorMap& m, const std::string& name) {
  auto it = m.find(name);
  EXPECT_TRUE(it != m.end()) << "golden tensor '" << name << "' missing";
  return it == m.end() ? at::Tensor() : it->second;
}

inline nlohmann::json LoadGoldenMeta() {
  std::ifstream in(GoldenDir() + "/meta.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// max|a - b| / max|b| (the README's tolerance measure); a and b are compared in float64.
inline double MaxRelErr(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor ad = a.detach().to(at::kDouble);
  at::Tensor bd = b.detach().to(at::kDouble);
  double denom = bd.abs().max().item<double>();
  double num = (ad - bd).abs().max().item<double>();
  return denom > 0 ? num / denom : num;
}

// Per-layer config of the v2_q2a4 golden file: attention layers use lut 16 / rank 8, the others
// lut 4 / rank 32 (README "Exact configurations").
inline bool IsGoldenAttention(const std::string& layer) { return layer == "q_proj" || layer == "k_proj"; }

}  // namespace qatd::quant::testing

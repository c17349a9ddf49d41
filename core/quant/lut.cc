#include "core/quant/lut.h"

#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"

namespace qatd::quant {

std::vector<float> PinnedLinspace(float start, float end, int steps) {
  std::vector<float> v;
  if (steps <= 0) return v;
  if (steps == 1) return {start};
  v.resize(steps);
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  for (int j = 0; j < steps; ++j) {
    // std::fma rounds once: exactly the torch 2.x kernel's value (spec §11 caveat).
    v[j] = j < halfway ? std::fma(step, static_cast<float>(j), start)
                       : std::fma(-step, static_cast<float>(steps - 1 - j), end);
  }
  return v;
}

absl::StatusOr<std::vector<float>> MakeLutValues(int lut_size, bool include_zero) {
  if (lut_size < 2 || lut_size > 256 || (lut_size & (lut_size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("lut_size must be a power of two in [2, 256], got ", lut_size));
  }
  if (!include_zero) return PinnedLinspace(-1.0f, 1.0f, lut_size);
  // spec §2.1: linspace(-1, 0, n/2 + 1) without its 0, then linspace(0, 1, n/2).
  std::vector<float> neg = PinnedLinspace(-1.0f, 0.0f, lut_size / 2 + 1);
  neg.pop_back();
  std::vector<float> pos = PinnedLinspace(0.0f, 1.0f, lut_size / 2);
  neg.insert(neg.end(), pos.begin(), pos.end());
  return neg;
}

absl::StatusOr<at::Tensor> MakeLut(int lut_size, bool include_zero, at::ScalarType dtype) {
  auto values = MakeLutValues(lut_size, include_zero);
  if (!values.ok()) return values.status();
  at::Tensor t = at::empty({static_cast<int64_t>(values->size())}, at::kFloat);
  std::copy(values->begin(), values->end(), t.data_ptr<float>());
  return t.to(dtype);
}

absl::Status CheckLut(const at::Tensor& lut, bool require_sorted) {
  if (!lut.defined() || lut.dim() != 1 || !at::isFloatingType(lut.scalar_type())) {
    return absl::InvalidArgumentError("LUT must be a 1-D floating tensor");
  }
  int64_t n = lut.numel();
  if (n < 2 || n > 256) return absl::InvalidArgumentError(absl::StrCat("LUT must have 2..256 entries, got ", n));
  at::Tensor v = lut.detach().to(at::kCPU, at::kDouble).contiguous();
  const double* p = v.data_ptr<double>();
  for (int64_t j = 0; j < n; ++j) {
    if (!std::isfinite(p[j])) return absl::InvalidArgumentError(absl::StrCat("LUT entry ", j, " is not finite"));
    if (require_sorted && j > 0 && p[j] < p[j - 1]) {
      return absl::InvalidArgumentError(absl::StrCat("LUT must be sorted ascending; entry ", j, " (", p[j],
                                                     ") < entry ", j - 1, " (", p[j - 1], ")"));
    }
  }
  return absl::OkStatus();
}

at::Tensor LutBoundaries(const at::Tensor& lut) {
  at::Tensor v = lut.detach().to(at::kCPU, at::kFloat).contiguous();
  const float* p = v.data_ptr<float>();
  const int64_t n = v.numel();
  at::Tensor b = at::empty({std::max<int64_t>(n - 1, 0)}, at::kFloat);
  float* out = b.data_ptr<float>();
  for (int64_t j = 0; j + 1 < n; ++j) {
    // The sum of two float32 LUT entries is exact in double (their exponents are close), so
    // `mid` is the exact midpoint; take the largest float32 not above it. For a float32 u,
    // u > that float  <=>  u > mid, which makes ties at the midpoint go to the lower index.
    const double mid = (static_cast<double>(p[j]) + static_cast<double>(p[j + 1])) * 0.5;
    float f = static_cast<float>(mid);
    if (static_cast<double>(f) > mid) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
    out[j] = f;
  }
  return b.to(lut.device());
}

namespace {

// #{boundaries < u} per element on the CPU. LibTorch 1.13's CPU searchsorted does a scalar
// binary search per element (~140 ms for a 3072x1024 matrix on 2 cores); for the usual
// <= 31 boundaries a chunked compare-and-count loop vectorises and is ~20x faster.
at::Tensor CountBoundariesBelowCpu(const at::Tensor& u, const at::Tensor& boundaries) {
  at::Tensor out = at::empty(u.sizes(), u.options().dtype(at::kLong));
  at::Tensor bc = boundaries.to(at::kCPU, at::kFloat).contiguous();
  const std::vector<float> b(bc.data_ptr<float>(), bc.data_ptr<float>() + bc.numel());
  const float* in = u.data_ptr<float>();
  int64_t* dst = out.data_ptr<int64_t>();
  at::parallel_for(0, u.numel(), 16384, [&](int64_t begin, int64_t end) {
    constexpr int64_t kChunk = 1024;
    int32_t count[kChunk];
    for (int64_t start = begin; start < end; start += kChunk) {
      const int64_t len = std::min(kChunk, end - start);
      const float* x = in + start;
      if (b.size() <= 31) {
        std::fill(count, count + len, 0);
        for (float bj : b) {
          for (int64_t i = 0; i < len; ++i) count[i] += x[i] > bj ? 1 : 0;  // NaN counts nothing
        }
      } else {
        for (int64_t i = 0; i < len; ++i) {
          count[i] = static_cast<int32_t>(std::lower_bound(b.begin(), b.end(), x[i]) - b.begin());
        }
      }
      for (int64_t i = 0; i < len; ++i) dst[start + i] = count[i];
    }
  });
  return out;
}

}  // namespace

at::Tensor NearestLutIndexWithBoundaries(const at::Tensor& u, const at::Tensor& boundaries) {
  at::NoGradGuard no_grad;
  at::Tensor uf = u.detach().to(at::kFloat).contiguous();
  if (uf.is_cpu()) return CountBoundariesBelowCpu(uf, boundaries);
  // idx = #{boundaries < u}: searchsorted with side "left".
  return at::searchsorted(boundaries, uf, /*out_int32=*/false, /*right=*/false);
}

at::Tensor NearestLutIndex(const at::Tensor& u, const at::Tensor& lut) {
  return NearestLutIndexWithBoundaries(u, LutBoundaries(lut).to(u.device()));
}

}  // namespace qatd::quant

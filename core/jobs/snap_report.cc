#include "core/jobs/snap_report.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/quant/quantize_model.h"

namespace qatd::jobs {

std::map<std::string, std::vector<double>> LutUsageByGroup(const std::vector<quant::SnapStats>& stats) {
  std::map<std::string, std::vector<double>> counts;
  for (const quant::SnapStats& st : stats) {
    if (st.lut_counts.empty()) continue;
    const bool attn = quant::ClassifyLinear(st.name) == quant::LinearKind::kAttention;
    std::vector<double>& group = counts[attn ? "attn" : "mlp"];
    if (group.size() < st.lut_counts.size()) group.resize(st.lut_counts.size(), 0.0);
    for (size_t i = 0; i < st.lut_counts.size(); ++i) group[i] += static_cast<double>(st.lut_counts[i]);
  }
  for (auto& [name, group] : counts) {
    double total = 0;
    for (double c : group) total += c;
    if (total > 0) {
      for (double& c : group) c /= total;
    }
  }
  return counts;
}

void ReportLutUsage(Reporter& reporter, const std::vector<quant::SnapStats>& stats) {
  for (const auto& [group, shares] : LutUsageByGroup(stats)) {
    std::string line = absl::StrCat("LUT entry usage, ", group, " layers (", shares.size(), " entries):");
    int unused = 0;
    for (size_t i = 0; i < shares.size(); ++i) {
      reporter.Metric(absl::StrCat("lut_usage/", group, "/", i), 0, shares[i]);
      absl::StrAppend(&line, absl::StrFormat(" %.3f", shares[i]));
      unused += shares[i] == 0.0 ? 1 : 0;
    }
    if (unused > 0) absl::StrAppend(&line, " (", unused, " never used)");
    reporter.Log(LogLevel::kInfo, line);
  }
}

}  // namespace qatd::jobs

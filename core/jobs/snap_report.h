#pragma once
// What a snap reports beyond its log line: the LUT entry usage of each layer group.

#include <map>
#include <string>
#include <vector>

#include "core/common/reporter.h"
#include "core/quant/snap.h"

namespace qatd::jobs {

// Share of the quantized weights mapped to each LUT entry, per layer group ("mlp", "attn"),
// summed over the group's layers: {"mlp": {0.21, 0.29, 0.29, 0.21}, ...}. Layers without counts
// are skipped; a group whose layers have different LUT sizes is sized by the largest.
std::map<std::string, std::vector<double>> LutUsageByGroup(const std::vector<quant::SnapStats>& stats);

// Reports LutUsageByGroup as the metrics "lut_usage/<group>/<entry>" (the daemon's
// qatd_job_lut_entry_usage_ratio{group,entry}) and one log line per group.
void ReportLutUsage(Reporter& reporter, const std::vector<quant::SnapStats>& stats);

}  // namespace qatd::jobs

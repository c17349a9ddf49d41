#include "server/pipeline_plan.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/jobs/job_spec.h"

namespace qatd::server {
namespace {

using google::protobuf::FieldDescriptor;

bool ValidStageName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

// The descriptor of the string field `field` of the spec's active message, or an error.
absl::StatusOr<const FieldDescriptor*> FedField(const v1::JobSpec& spec, const std::string& field) {
  const auto* oneof = v1::JobSpec::descriptor()->FindOneofByName("kind");
  const FieldDescriptor* active = spec.GetReflection()->GetOneofFieldDescriptor(spec, oneof);
  if (active == nullptr) return absl::InvalidArgumentError("the stage's spec sets no job kind");
  const FieldDescriptor* target = active->message_type()->FindFieldByName(field);
  if (target == nullptr || target->type() != FieldDescriptor::TYPE_STRING || target->is_repeated()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", field, "' is not a string field of ", active->message_type()->name()));
  }
  return target;
}

}  // namespace

absl::Status SetSpecField(v1::JobSpec& spec, const std::string& field, const std::string& value) {
  absl::StatusOr<const FieldDescriptor*> target = FedField(spec, field);
  if (!target.ok()) return target.status();
  const auto* oneof = v1::JobSpec::descriptor()->FindOneofByName("kind");
  const FieldDescriptor* active = spec.GetReflection()->GetOneofFieldDescriptor(spec, oneof);
  google::protobuf::Message* message = spec.GetReflection()->MutableMessage(&spec, active);
  message->GetReflection()->SetString(message, *target, value);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<storage::NewJob>> PlanPipeline(const v1::PipelineSpec& spec,
                                                          const jobs::SpecCheckContext& base) {
  const int n = spec.stages_size();
  if (n == 0) return absl::InvalidArgumentError("spec.stages must not be empty");
  if (n > 256) return absl::InvalidArgumentError(absl::StrCat("spec.stages has ", n, " stages; the limit is 256"));
  if (spec.name().size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat("spec.name must be at most 256 bytes, got ", spec.name().size()));
  }

  std::map<std::string, int> index_of;
  for (int i = 0; i < n; ++i) {
    const std::string& name = spec.stages(i).name();
    if (!ValidStageName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.stages[", i, "].name must match [A-Za-z0-9_.-]{1,64}, got '", name, "'"));
    }
    if (!index_of.emplace(name, i).second) {
      return absl::InvalidArgumentError(absl::StrCat("spec.stages[", i, "].name '", name, "' is not unique"));
    }
  }

  std::vector<std::set<int>> deps(n);
  for (int i = 0; i < n; ++i) {
    const v1::PipelineStage& stage = spec.stages(i);
    for (int d = 0; d < stage.depends_on_size(); ++d) {
      auto it = index_of.find(stage.depends_on(d));
      if (it == index_of.end() || it->second == i) {
        return absl::InvalidArgumentError(absl::StrCat("spec.stages[", i, "].depends_on[", d, "] '",
                                                       stage.depends_on(d), "' is not another stage"));
      }
      deps[i].insert(it->second);
    }
    jobs::SpecCheckContext context = base;
    context.prefix = absl::StrCat("spec.stages[", i, "].spec");
    context.fed_fields.clear();
    for (int k = 0; k < stage.inputs_size(); ++k) {
      const v1::ArtifactInput& input = stage.inputs(k);
      const std::string where = absl::StrCat("spec.stages[", i, "].inputs[", k, "]");
      auto it = index_of.find(input.from_stage());
      if (it == index_of.end() || it->second == i) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".from_stage '", input.from_stage(), "' is not another stage"));
      }
      if (input.artifact_kind().empty()) return absl::InvalidArgumentError(absl::StrCat(where, ".artifact_kind is required"));
      absl::StatusOr<const FieldDescriptor*> field = FedField(stage.spec(), input.field());
      if (!field.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ".field: ", std::string(field.status().message())));
      deps[i].insert(it->second);
      context.fed_fields.insert(input.field());
    }
    if (absl::Status valid = jobs::ValidateJobSpec(stage.spec(), context); !valid.ok()) return valid;
  }

  // Kahn's algorithm, always taking the lowest ready index, so the order is stable.
  std::vector<int> remaining(n);
  for (int i = 0; i < n; ++i) remaining[i] = static_cast<int>(deps[i].size());
  std::vector<int> order;
  std::vector<bool> placed(n, false);
  while (static_cast<int>(order.size()) < n) {
    int next = -1;
    for (int i = 0; i < n; ++i) {
      if (!placed[i] && remaining[i] == 0) {
        next = i;
        break;
      }
    }
    if (next < 0) {
      for (int i = 0; i < n; ++i) {
        if (!placed[i]) {
          return absl::InvalidArgumentError(
              absl::StrCat("spec.stages: the dependencies form a cycle through stage '", spec.stages(i).name(), "'"));
        }
      }
    }
    placed[next] = true;
    order.push_back(next);
    for (int i = 0; i < n; ++i) {
      if (deps[i].count(next) > 0) --remaining[i];
    }
  }

  std::vector<int> position(n);
  for (int p = 0; p < n; ++p) position[order[p]] = p;
  std::vector<storage::NewJob> jobs;
  jobs.reserve(n);
  for (int i : order) {
    const v1::PipelineStage& stage = spec.stages(i);
    storage::NewJob job;
    job.spec = stage.spec();
    job.stage = stage.name();
    for (int d : deps[i]) job.depends_on.push_back(position[d]);
    std::sort(job.depends_on.begin(), job.depends_on.end());
    job.inputs.assign(stage.inputs().begin(), stage.inputs().end());
    jobs.push_back(std::move(job));
  }
  return jobs;
}

}  // namespace qatd::server

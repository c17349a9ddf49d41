// `qat export` (ExportSpec, issue #17): a checkpoint as a model other tools read. --from-job
// fills --checkpoint (and --model) from a finished job.
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "client/connection.h"
#include "client/spec_commands.h"

namespace qatd::client {
namespace {

class ExportCommand : public SpecCommand {
 protected:
  void Init(v1::JobSpec& spec) override { spec.mutable_export_(); }

  std::string Example() const override {
    return "qat export --model ./Qwen3-0.6B --checkpoint <checkpoint> --dtype bf16 --wait\n"
           "  qat export --from-job 17 --wait          (the newest checkpoint of job 17, on its base model)\n"
           "  then: AutoModelForCausalLM.from_pretrained(\"<output>/hf\") in transformers\n"
           "  qat export --from-job 17 --format anemll --wait   (<output>/anemll: packed indices, LUTs,\n"
           "  low-rank scales, snapped weights, config.json, anemll_manifest.json; docs/export-anemll.md)";
  }

  void AddFlags(SpecFlags& f) override {
    auto e = [this] { return spec_.mutable_export_(); };
    f.Path("--model,--model-id",
           "Base model the checkpoint was trained from: a Hugging Face Qwen3 folder on the daemon's host (required "
           "unless --from-job)",
           [e](const std::string& v) { e()->set_model(v); });
    f.Path("--checkpoint", "qatd checkpoint to export, e.g. a QAT/CONVERT/SNAP job's output/final (required unless --from-job)",
           [e](const std::string& v) { e()->set_checkpoint(v); });
    f.Enum("--format",
           "hf: a Hugging Face folder with every quantized weight materialised as LUT[indices] x scales (default); "
           "anemll: the LUT-palettized layers for ANEMLL's Core ML tooling (packed indices, LUT, low-rank scales, "
           "snapped weights, the other tensors, config.json, anemll_manifest.json with SHA-256s; docs/export-anemll.md)",
           {{"hf", v1::EXPORT_FORMAT_HF}, {"anemll", v1::EXPORT_FORMAT_ANEMLL}},
           [e](int v) { e()->set_format(static_cast<v1::ExportFormat>(v)); });
    f.Enum("--dtype", "Dtype of the written floating tensors (default bf16 for hf, fp16 for anemll)",
           {{"bf16", v1::DTYPE_BF16}, {"fp16", v1::DTYPE_FP16}, {"fp32", v1::DTYPE_FP32}},
           [e](int v) { e()->set_dtype(static_cast<v1::Dtype>(v)); });
    f.Value<int64_t>("--max-shard-bytes",
                     "hf only: split the weights into model-0000N-of-0000M.safetensors above this size (default 2 GiB)",
                     [e](const int64_t& v) { e()->set_max_shard_bytes(v); });
    f.Path("--output-dir,--output",
           "Where the export goes; the folder is <output-dir>/hf or <output-dir>/anemll (default: the job's directory; "
           "else a new or empty "
           "directory under one of the daemon's --allow-output-root)",
           [e](const std::string& v) { e()->set_output_dir(v); });
  }
};

// The first string field `name` of the spec's kind message ("" when there is none).
std::string SpecString(const v1::JobSpec& spec, const char* name) {
  const google::protobuf::OneofDescriptor* oneof = v1::JobSpec::descriptor()->FindOneofByName("kind");
  const google::protobuf::FieldDescriptor* kind = spec.GetReflection()->GetOneofFieldDescriptor(spec, oneof);
  if (kind == nullptr) return "";
  const google::protobuf::Message& message = spec.GetReflection()->GetMessage(spec, kind);
  const google::protobuf::FieldDescriptor* field = message.GetDescriptor()->FindFieldByName(name);
  if (field == nullptr || field->type() != google::protobuf::FieldDescriptor::TYPE_STRING || field->is_repeated()) return "";
  return message.GetReflection()->GetString(message, field);
}

}  // namespace

std::unique_ptr<SpecCommand> NewExportCommand() { return std::make_unique<ExportCommand>(); }

// The call's own code (UNAVAILABLE: the daemon is unreachable, NOT_FOUND: no such job, ...),
// so the caller reports it as every other failed call (Connection::Report's exit codes).
static absl::Status FromJobRpcError(int64_t job_id, const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat("--from-job ", job_id, ": ", status.error_message()));
}

absl::Status FillExportFromJob(Connection& connection, int64_t job_id, v1::ExportSpec* spec) {
  if (spec->checkpoint().empty()) {
    v1::ListArtifactsRequest request;
    request.set_job_id(job_id);
    request.set_kind("checkpoint");
    v1::ListArtifactsResponse response;
    const grpc::Status status = connection.stub().ListArtifacts(connection.UnaryContext().get(), request, &response);
    if (!status.ok()) return FromJobRpcError(job_id, status);
    const v1::Artifact* newest = nullptr;
    for (const v1::Artifact& a : response.artifacts()) {
      if (newest == nullptr || a.id() > newest->id()) newest = &a;
    }
    if (newest == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("--from-job ", job_id,
                                                     " has no \"checkpoint\" artifact (qat artifacts ", job_id,
                                                     " lists what it made); pass --checkpoint"));
    }
    spec->set_checkpoint(newest->path());
  }
  if (spec->model().empty()) {
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    const grpc::Status status = connection.stub().GetJob(connection.UnaryContext().get(), request, &job);
    if (!status.ok()) return FromJobRpcError(job_id, status);
    const std::string model = SpecString(job.spec(), "model");
    if (model.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--from-job ", job_id, ": its spec names no model; pass --model"));
    }
    spec->set_model(model);
  }
  return absl::OkStatus();
}

}  // namespace qatd::client

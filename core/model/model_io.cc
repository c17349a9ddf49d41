#include "core/model/model_io.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"
#include "core/model/safetensors.h"

namespace qatd::model {
namespace {

// POSIX rather than std::filesystem here: with a pip LibTorch, std::filesystem calls can bind
// to the copy libtorch.so exports (seen crashing in remove_all on the CUDA host).

std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

// mkdir -p.
absl::Status MakeDirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::InternalError(absl::StrCat("mkdir ", prefix, ": ", std::strerror(errno)));
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InternalError(absl::StrCat(dir, " is not a directory"));
  }
  return absl::OkStatus();
}

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

absl::StatusOr<at::ScalarType> ToScalarType(DType dtype, const std::string& name) {
  switch (dtype) {
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has dtype ", std::string(DTypeName(dtype)),
                                                     ", expected F32, F16 or BF16"));
  }
}

absl::StatusOr<DType> ToDType(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    default:
      return absl::InvalidArgumentError(absl::StrCat("cannot save dtype ", c10::toString(dtype),
                                                     ": expected float32, float16 or bfloat16"));
  }
}

absl::Status CheckFloatDtype(at::ScalarType dtype, const char* what) {
  if (dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " must be float32, bfloat16 or float16, got ",
                                                 c10::toString(dtype)));
}

// Tensors a HF checkpoint may carry that are not parameters here.
bool IgnorableExtra(const std::string& name, bool tied) {
  if (tied && name == "lm_head.weight") return true;  // some exporters write the tied copy
  return absl::EndsWith(name, ".rotary_emb.inv_freq");  // old transformers saved the buffer
}

// The folder holding the weights for a LoadQwen3 argument (a folder or its config.json).
std::string WeightsPath(const std::string& path) {
  if (!absl::EndsWith(path, ".json")) return path;
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The HF tensors of `model`: every parameter outside the linear layers, plus each linear
// layer's effective dense weight under "<name>.weight". Sorted by name.
std::vector<std::pair<std::string, at::Tensor>> HfTensors(Qwen3ModelImpl& model) {
  const std::vector<std::string> linears = model.LinearNames();
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const std::string& name : linears) {
    out.emplace_back(name + ".weight", model.GetLinear(name)->EffectiveWeight());
  }
  const std::set<std::string> linear_set(linears.begin(), linears.end());
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const size_t dot = name.rfind('.');
    // Parameters of linear layers sit directly under the layer ("<linear>.weight") for dense
    // layers; quantized layers may nest deeper, so test every prefix.
    bool in_linear = false;
    for (size_t pos = name.find('.'); pos != std::string::npos && pos <= dot; pos = name.find('.', pos + 1)) {
      if (linear_set.count(name.substr(0, pos))) {
        in_linear = true;
        break;
      }
    }
    if (!in_linear) out.emplace_back(name, item.value().detach());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

absl::Status CopyCheckpoint(Qwen3ModelImpl& model, const Checkpoint& ckpt, const std::string& where) {
  // Validate everything before the first copy, so a bad checkpoint leaves the model alone.
  struct Pending {
    at::Tensor param;
    TensorView view;
    at::ScalarType dtype;
  };
  std::vector<Pending> pending;
  std::set<std::string> expected;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const at::Tensor& param = item.value();
    expected.insert(name);
    if (!ckpt.Has(name)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": missing tensor '", name, "' (expected shape ",
                                                     ShapeString(param.sizes()), ")"));
    }
    QATD_ASSIGN_OR_RETURN(TensorView view, ckpt.Get(name));
    QATD_ASSIGN_OR_RETURN(at::ScalarType dtype, ToScalarType(view.info->dtype, name));
    if (!param.sizes().equals(view.info->shape)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": tensor '", name, "' has shape ",
                                                     ShapeString(view.info->shape), ", the model expects ",
                                                     ShapeString(param.sizes())));
    }
    pending.push_back(Pending{param, view, dtype});
  }
  for (const std::string& name : ckpt.Names()) {
    if (!expected.count(name) && !IgnorableExtra(name, model.tied())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": unexpected tensor '", name, "' (not a parameter of this Qwen3 config)"));
    }
  }
  return CatchTorch("load weights", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (Pending& p : pending) {
      // A view of the mapped bytes; copy_ converts dtype and device in one pass.
      at::Tensor src = at::from_blob(const_cast<void*>(p.view.data), p.view.info->shape,
                                     at::TensorOptions().dtype(p.dtype));
      p.param.copy_(src);
    }
    return absl::OkStatus();
  });
}

}  // namespace

absl::StatusOr<at::ScalarType> ParseTorchDtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return at::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype must be one of float32, bfloat16, float16 (or fp32, bf16, fp16), got '", name, "'"));
}

std::string TorchDtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return c10::toString(dtype);
  }
}

absl::Status LoadQwen3Weights(Qwen3Model& model, const std::string& checkpoint_dir) {
  QATD_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(WeightsPath(checkpoint_dir)));
  return CopyCheckpoint(*model, ckpt, checkpoint_dir);
}

absl::StatusOr<LoadedModel> LoadQwen3(const std::string& dir, const LoadOptions& options) {
  QATD_RETURN_IF_ERROR(CheckFloatDtype(options.dtype, "LoadOptions.dtype"));
  LoadedModel loaded;
  QATD_ASSIGN_OR_RETURN(loaded.config, Qwen3Config::FromFile(dir));
  QATD_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(WeightsPath(dir)));
  QATD_RETURN_IF_ERROR(CatchTorch("build model", [&]() -> absl::Status {
    loaded.model = Qwen3Model(loaded.config, at::TensorOptions().dtype(options.dtype).device(options.device));
    loaded.model->eval();
    return absl::OkStatus();
  }));
  QATD_RETURN_IF_ERROR(CopyCheckpoint(*loaded.model, ckpt, dir));
  return loaded;
}

absl::Status SaveQwen3(Qwen3Model& model, const Qwen3Config& config, const std::string& dir,
                       const SaveOptions& options) {
  const at::ScalarType dtype = options.dtype.value_or(model->dtype());
  QATD_ASSIGN_OR_RETURN(DType st_dtype, ToDType(dtype));
  QATD_RETURN_IF_ERROR(MakeDirs(dir));

  // CPU copies in the target dtype (no copy for a CPU model already in that dtype).
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  QATD_RETURN_IF_ERROR(CatchTorch("save: gather tensors", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    tensors = HfTensors(*model);
    for (auto& [name, t] : tensors) t = t.to(at::kCPU, dtype).contiguous();
    return absl::OkStatus();
  }));
  std::vector<TensorToWrite> to_write;
  to_write.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    to_write.push_back(TensorToWrite{name, st_dtype, t.sizes().vec(), t.data_ptr(),
                                     static_cast<size_t>(t.nbytes())});
  }
  QATD_RETURN_IF_ERROR(WriteSafetensors(JoinPath(dir, "model.safetensors"), to_write,
                                        {{"format", "pt"}}));
  Qwen3Config out_config = config;
  out_config.torch_dtype = TorchDtypeName(dtype);
  return WriteFileAtomically(JoinPath(dir, "config.json"), out_config.ToJson());
}

absl::StatusOr<Qwen3Model> InitTinyQwen3(const Qwen3Config& config, const InitOptions& options) {
  QATD_RETURN_IF_ERROR(config.Validate());
  QATD_RETURN_IF_ERROR(CheckFloatDtype(options.dtype, "InitOptions.dtype"));
  if (!(options.initializer_range > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("initializer_range must be > 0, got ", options.initializer_range));
  }
  Qwen3Model model{nullptr};
  QATD_RETURN_IF_ERROR(CatchTorch("init model", [&]() -> absl::Status {
    model = Qwen3Model(config, at::TensorOptions().dtype(options.dtype).device(options.device));
    at::NoGradGuard no_grad;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
    for (auto& item : model->named_parameters(/*recurse=*/true)) {
      at::Tensor& param = item.value();
      if (param.dim() == 1) {
        param.fill_(1.0);  // every 1-D parameter of Qwen3 is an RMSNorm weight
        continue;
      }
      at::Tensor values = at::empty(param.sizes(), at::kFloat);
      values.normal_(0.0, options.initializer_range, gen);
      param.copy_(values);
    }
    return absl::OkStatus();
  }));
  return model;
}

}  // namespace qatd::model

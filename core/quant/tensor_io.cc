#include "core/quant/tensor_io.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"

namespace qatd::quant {

absl::StatusOr<model::DType> ToSafetensorsDType(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return model::DType::kF32;
    case at::kHalf:
      return model::DType::kF16;
    case at::kBFloat16:
      return model::DType::kBF16;
    case at::kLong:
      return model::DType::kI64;
    case at::kInt:
      return model::DType::kI32;
    case at::kShort:
      return model::DType::kI16;
    case at::kChar:
      return model::DType::kI8;
    case at::kByte:
      return model::DType::kU8;
    case at::kBool:
      return model::DType::kBool;
    default:
      return absl::InvalidArgumentError(absl::StrCat("dtype ", c10::toString(type), " cannot be stored in safetensors"));
  }
}

at::ScalarType ToScalarType(model::DType dtype) {
  switch (dtype) {
    case model::DType::kF32:
      return at::kFloat;
    case model::DType::kF16:
      return at::kHalf;
    case model::DType::kBF16:
      return at::kBFloat16;
    case model::DType::kI64:
      return at::kLong;
    case model::DType::kI32:
      return at::kInt;
    case model::DType::kI16:
      return at::kShort;
    case model::DType::kI8:
      return at::kChar;
    case model::DType::kU8:
      return at::kByte;
    case model::DType::kBool:
      return at::kBool;
  }
  return at::kFloat;
}

at::Tensor TensorFromView(const model::TensorView& view) {
  at::Tensor t = at::empty(view.info->shape, at::TensorOptions().dtype(ToScalarType(view.info->dtype)));
  if (view.info->nbytes() > 0) std::memcpy(t.data_ptr(), view.data, view.info->nbytes());
  return t;
}

absl::Status WriteTensorMap(const std::string& path, const TensorMap& tensors,
                            const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // contiguous CPU copies alive until the write finishes
  std::vector<model::TensorToWrite> out;
  keep.reserve(tensors.size());
  out.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is undefined"));
    QATD_ASSIGN_OR_RETURN(model::DType dtype, ToSafetensorsDType(tensor.scalar_type()));
    keep.push_back(tensor.detach().to(at::kCPU).contiguous());
    const at::Tensor& t = keep.back();
    model::TensorToWrite w;
    w.name = name;
    w.dtype = dtype;
    w.shape.assign(t.sizes().begin(), t.sizes().end());
    w.data = t.data_ptr();
    w.nbytes = t.numel() * t.element_size();
    out.push_back(std::move(w));
  }
  return model::WriteSafetensors(path, out, metadata);
}

absl::StatusOr<LoadedTensors> ReadTensorMap(const std::string& path) {
  QATD_ASSIGN_OR_RETURN(auto file, model::SafetensorsFile::Open(path));
  LoadedTensors out;
  out.metadata = file->metadata();
  for (const model::TensorInfo& info : file->tensors()) {
    model::TensorView view{&info, file->DataOf(info)};
    out.tensors[info.name] = TensorFromView(view);
  }
  return out;
}

}  // namespace qatd::quant

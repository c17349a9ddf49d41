#include "core/model/torch_state_dict.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"

namespace qatd::model {
namespace {

using Kind = PickleValue::Kind;

// The dtype of a storage class name without "Storage" (torch_pickle.h's list).
bool StorageDtype(const std::string& name, at::ScalarType* out) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"Float", at::kFloat}, {"Double", at::kDouble}, {"Half", at::kHalf}, {"BFloat16", at::kBFloat16},
      {"Long", at::kLong},   {"Int", at::kInt},       {"Short", at::kShort}, {"Char", at::kChar},
      {"Byte", at::kByte},   {"Bool", at::kBool}};
  auto it = kTypes.find(name);
  if (it == kTypes.end()) return false;
  *out = it->second;
  return true;
}

absl::Status Annotate(const absl::Status& s, const std::string& path) {
  return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
}

// Reads the file's leading bytes: torch.save's zip starts with a local file header.
absl::Status CheckZip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() != 4 || std::string(magic, 4) != std::string("PK\x03\x04", 4)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a zip archive: only torch.save's zip format (PyTorch >= 1.6, the default) is read, not the "
              "legacy format (_use_new_zipfile_serialization=False)"));
  }
  return absl::OkStatus();
}

// Makes every tensor of `doc` from the storage records of `reader`.
absl::Status MaterializeTensors(caffe2::serialize::PyTorchStreamReader& reader, const std::string& path,
                                TorchPtFile& file) {
  const PickleDocument& doc = file.pickle;
  std::map<std::pair<std::string, std::string>, at::Tensor> storages;  // (key, dtype) -> 1-D tensor
  for (size_t index = 0; index < doc.values.size(); ++index) {
    const PickleValue& value = doc.values[index];
    if (value.kind != Kind::kTensor) continue;
    const PickleStorage& s = doc.at(value.tensor.storage).storage;
    at::ScalarType dtype;
    if (!StorageDtype(s.dtype, &dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": storage ", s.key, " is a torch.", s.dtype, "Storage, which qatd does not read"));
    }
    at::Tensor& base = storages[{s.key, s.dtype}];
    if (!base.defined()) {
      const std::string record = absl::StrCat("data/", s.key);
      if (!reader.hasRecord(record)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": storage record ", record, " is missing (a tensor's persistent id names it)"));
      }
      at::DataPtr data;
      size_t nbytes = 0;
      std::tie(data, nbytes) = reader.getRecord(record);
      const size_t want = static_cast<size_t>(s.numel) * at::elementSize(dtype);
      if (nbytes != want) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": storage record ", record, " holds ", nbytes,
                                                       " bytes, but its persistent id says ", s.numel, " ", s.dtype,
                                                       " elements (", want, " bytes)"));
      }
      const auto options = at::TensorOptions().dtype(dtype).device(at::kCPU);
      if (s.numel == 0) {
        base = at::empty({0}, options);
      } else {
        // The tensor keeps the record's buffer alive; no copy.
        auto keep = std::make_shared<at::DataPtr>(std::move(data));
        void* ptr = keep->get();
        base = at::from_blob(ptr, {s.numel}, [keep](void*) {}, options);
      }
    }
    const PickleTensor& t = value.tensor;
    file.tensors[static_cast<int>(index)] = base.as_strided(t.sizes, t.strides, t.offset);
  }
  return absl::OkStatus();
}

// LibTorch's own loader (the fallback for constructs outside the safe reader's whitelist).
absl::StatusOr<NamedTensors> ReadWithLibTorch(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::NotFoundError(absl::StrCat("read error on ", path));
  NamedTensors out;
  QATD_RETURN_IF_ERROR(CatchTorch("LibTorch pickle_load", [&]() -> absl::Status {
    c10::IValue value = torch::jit::pickle_load(bytes);
    if (!value.isGenericDict()) return absl::InvalidArgumentError(absl::StrCat(path, " is not a dict of tensors"));
    for (const auto& item : value.toGenericDict()) {
      if (item.key().isString() && item.key().toStringRef() == "model_state_dict" && item.value().isGenericDict()) {
        value = item.value();
        break;
      }
    }
    for (const auto& item : value.toGenericDict()) {
      if (item.key().isString() && item.value().isTensor()) out.emplace_back(item.key().toStringRef(), item.value().toTensor());
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace

absl::StatusOr<TorchPtFile> ReadTorchPt(const std::string& path) {
  QATD_RETURN_IF_ERROR(CheckZip(path));
  TorchPtFile file;
  absl::Status parsed = absl::OkStatus();
  absl::Status read = CatchTorch("read .pt archive", [&]() -> absl::Status {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (!reader.hasRecord("data.pkl")) {
      return absl::InvalidArgumentError(absl::StrCat(path, " has no data.pkl record: not a torch.save file"));
    }
    if (reader.hasRecord("byteorder")) {
      at::DataPtr order;
      size_t n = 0;
      std::tie(order, n) = reader.getRecord("byteorder");
      const std::string value(static_cast<const char*>(order.get()), n);
      if (value != "little") {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": byteorder record says \"", value, "\"; only little-endian files are read"));
      }
    }
    at::DataPtr pickle;
    size_t size = 0;
    std::tie(pickle, size) = reader.getRecord("data.pkl");
    absl::StatusOr<PickleDocument> doc =
        ParseTorchPickle(absl::string_view(static_cast<const char*>(pickle.get()), size));
    if (!doc.ok()) {
      parsed = Annotate(doc.status(), absl::StrCat(path, ": data.pkl"));
      return absl::OkStatus();
    }
    file.pickle = *std::move(doc);
    return MaterializeTensors(reader, path, file);
  });
  // LibTorch's messages (a corrupt zip) do not name the file.
  if (absl::IsInternal(read) || absl::IsResourceExhausted(read)) return Annotate(read, path);
  QATD_RETURN_IF_ERROR(read);
  QATD_RETURN_IF_ERROR(parsed);
  return file;
}

absl::StatusOr<NamedTensors> ReadTorchStateDict(const std::string& path) {
  absl::StatusOr<TorchPtFile> file = ReadTorchPt(path);
  if (absl::IsUnimplemented(file.status())) {
    absl::StatusOr<NamedTensors> fallback = ReadWithLibTorch(path);
    if (fallback.ok()) return fallback;
    return absl::Status(file.status().code(),
                        absl::StrCat(file.status().message(), " (LibTorch's loader failed too: ", fallback.status().message(), ")"));
  }
  if (!file.ok()) return file.status();
  const PickleDocument& doc = file->pickle;
  int dict = doc.root;
  if (doc.at(dict).kind != Kind::kDict) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " holds a ", PickleKindName(doc.at(dict).kind), ", not a dict of tensors"));
  }
  const int inner = doc.Find(dict, "model_state_dict");  // convert_v1_to_v2.py's wrapper (spec §5)
  if (inner >= 0 && doc.at(inner).kind == Kind::kDict) dict = inner;
  NamedTensors out;
  std::unordered_map<std::string, size_t> position;
  for (const auto& [key, value] : doc.at(dict).entries) {
    if (doc.at(key).kind != Kind::kString || doc.at(value).kind != Kind::kTensor) continue;
    const at::Tensor& tensor = file->tensors.at(value);
    auto [it, inserted] = position.emplace(doc.at(key).s, out.size());
    if (inserted) {
      out.emplace_back(doc.at(key).s, tensor);
    } else {
      out[it->second].second = tensor;
    }
  }
  return out;
}

}  // namespace qatd::model

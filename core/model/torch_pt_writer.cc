#include "core/model/torch_pt_writer.h"

#include <caffe2/serialize/inline_container.h>

#include <bit>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/common/file_util.h"
#include "core/common/status_macros.h"
#include "core/common/torch_status.h"

namespace qatd::model {
namespace {

// The storage class torch.save names for a dtype ("" = unsupported).
const char* StorageName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "FloatStorage";
    case at::kDouble: return "DoubleStorage";
    case at::kHalf: return "HalfStorage";
    case at::kBFloat16: return "BFloat16Storage";
    case at::kByte: return "ByteStorage";
    case at::kChar: return "CharStorage";
    case at::kShort: return "ShortStorage";
    case at::kInt: return "IntStorage";
    case at::kLong: return "LongStorage";
    case at::kBool: return "BoolStorage";
    default: return "";
  }
}

// The pickle protocol 2 opcodes torch.save's output uses, nothing else.
class PickleWriter {
 public:
  PickleWriter() { out_ += "\x80\x02"; }  // PROTO 2

  void Mark() { out_ += '('; }
  void EmptyDict() { out_ += '}'; }
  void SetItems() { out_ += 'u'; }
  void Tuple() { out_ += 't'; }
  void EmptyTuple() { out_ += ')'; }
  void Reduce() { out_ += 'R'; }
  void NewFalse() { out_ += '\x89'; }  // NEWFALSE
  void BinPersId() { out_ += 'Q'; }
  void Stop() { out_ += '.'; }
  void Global(const std::string& module, const std::string& name) { absl::StrAppend(&out_, "c", module, "\n", name, "\n"); }
  void String(const std::string& s) {  // BINUNICODE: 4-byte little-endian length + UTF-8
    out_ += 'X';
    Le(static_cast<uint64_t>(s.size()), 4);
    out_ += s;
  }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      out_ += 'K';  // BININT1
      Le(static_cast<uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      out_ += 'M';  // BININT2
      Le(static_cast<uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      out_ += 'J';  // BININT: signed 4 bytes
      Le(static_cast<uint64_t>(static_cast<uint32_t>(static_cast<int32_t>(v))), 4);
    } else {
      out_ += '\x8a';  // LONG1: n bytes of little-endian two's complement
      out_ += '\x08';
      Le(static_cast<uint64_t>(v), 8);
    }
  }
  void IntTuple(c10::IntArrayRef values) {
    if (values.empty()) return EmptyTuple();
    Mark();
    for (int64_t v : values) Int(v);
    Tuple();
  }
  std::string& bytes() { return out_; }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xFF);
  }
  std::string out_;
};

}  // namespace

absl::StatusOr<std::string> SerializeTorchPt(const NamedTensors& tensors) {
  static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big);
  // Contiguous CPU copies that own their whole storage (offset 0, numel elements).
  std::vector<at::Tensor> data;
  data.reserve(tensors.size());
  PickleWriter p;
  p.EmptyDict();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    if (name.empty()) return absl::InvalidArgumentError(absl::StrCat("tensor ", i, " has an empty name"));
    if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is undefined"));
    const char* storage = StorageName(tensor.scalar_type());
    if (*storage == '\0') {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ", std::string(c10::toString(tensor.scalar_type())),
                                                     "; a .pt file holds float32/64, float16, bfloat16, (u)int8-64 or bool"));
    }
    at::Tensor t;
    QATD_RETURN_IF_ERROR(CatchTorch("copy a tensor to the CPU", [&]() -> absl::Status {
      t = tensor.detach().to(at::kCPU).contiguous();
      if (t.storage_offset() != 0 || t.storage().nbytes() != static_cast<size_t>(t.numel()) * t.element_size()) {
        t = t.clone(at::MemoryFormat::Contiguous);
      }
      return absl::OkStatus();
    }));
    if (i % 1000 == 0) p.Mark();  // SETITEMS batches of at most 1000, as Python's pickler writes them
    p.String(name);
    p.Global("torch._utils", "_rebuild_tensor_v2");
    p.Mark();
    p.Mark();  // persistent id: ('storage', torch.<Dtype>Storage, key, location, numel)
    p.String("storage");
    p.Global("torch", storage);
    p.String(std::to_string(data.size()));
    p.String("cpu");
    p.Int(t.numel());
    p.Tuple();
    p.BinPersId();
    p.Int(0);  // storage offset
    p.IntTuple(t.sizes());
    p.IntTuple(t.strides());
    p.NewFalse();  // requires_grad
    p.Global("collections", "OrderedDict");  // backward hooks: none
    p.EmptyTuple();
    p.Reduce();
    p.Tuple();
    p.Reduce();
    if (i % 1000 == 999 || i + 1 == tensors.size()) p.SetItems();
    data.push_back(std::move(t));
  }
  p.Stop();

  std::string file;
  QATD_RETURN_IF_ERROR(CatchTorch("write a .pt archive", [&]() -> absl::Status {
    caffe2::serialize::PyTorchStreamWriter writer([&file](const void* bytes, size_t n) -> size_t {
      file.append(static_cast<const char*>(bytes), n);
      return n;
    });
    writer.writeRecord("data.pkl", p.bytes().data(), p.bytes().size());
    const std::string order = std::endian::native == std::endian::little ? "little" : "big";
    writer.writeRecord("byteorder", order.data(), order.size());
    for (size_t i = 0; i < data.size(); ++i) {
      const size_t n = static_cast<size_t>(data[i].numel()) * data[i].element_size();
      writer.writeRecord(absl::StrCat("data/", i), n > 0 ? data[i].data_ptr() : static_cast<const void*>(""), n);
    }
    writer.writeEndOfFile();
    return absl::OkStatus();
  }));
  return file;
}

absl::Status WriteTorchPt(const std::string& path, const NamedTensors& tensors) {
  QATD_ASSIGN_OR_RETURN(const std::string bytes, SerializeTorchPt(tensors));
  return WriteFileAtomically(path, bytes);
}

}  // namespace qatd::model

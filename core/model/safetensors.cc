#include "core/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/atomic_file_writer.h"
#include "core/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace qatd::model {
namespace {

using json = nlohmann::json;

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kF32, "F32", 4},  {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8},  {DType::kI32, "I32", 4}, {DType::kI16, "I16", 2},
    {DType::kI8, "I8", 1},    {DType::kU8, "U8", 1},   {DType::kBool, "BOOL", 1},
};

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed safetensors: ", what));
}

// Multiplies with overflow detection.
bool MulOverflow(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

size_t DTypeSize(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.size;
  return 0;
}

std::string_view DTypeName(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.name;
  return "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const auto& e : kDTypes)
    if (e.name == name) return e.dtype;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dtype '", absl::string_view(name.data(), name.size()), "' (supported: F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"));
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no such file: ", path));
    return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("fstat ", path, ": ", std::strerror(errno)));
  }
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat("mmap ", path, ": ", std::strerror(errno)));
    }
    file->mapping_ = m;
    file->mapping_size_ = size;
  }
  ::close(fd);
  absl::Status s = file->Parse(static_cast<const uint8_t*>(file->mapping_), size);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return file;
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(const void* bytes,
                                                                              size_t size) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = "<memory>";
  QATD_RETURN_IF_ERROR(file->Parse(static_cast<const uint8_t*>(bytes), size));
  return file;
}

absl::Status SafetensorsFile::Parse(const uint8_t* bytes, size_t size) {
  if (size < 8) return Malformed(absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
  if (header_len > kMaxHeaderBytes)
    return Malformed(absl::StrCat("header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes));
  if (header_len > size - 8)
    return Malformed(absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                  size, " bytes): truncated?"));
  const char* hdr = reinterpret_cast<const char*>(bytes + 8);
  json root = json::parse(hdr, hdr + header_len, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Malformed("header is not well-formed JSON");
  if (!root.is_object()) return Malformed("header JSON is not an object");

  data_ = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  tensors_.clear();
  index_.clear();
  metadata_.clear();
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Malformed("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Malformed(absl::StrCat("__metadata__['", m.key(), "'] is not a string"));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](absl::string_view why) { return Malformed(absl::StrCat("tensor '", name, "': ", why)); };
    if (!v.is_object()) return bad("entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return bad("missing or non-string 'dtype'");
    if (sh == v.end() || !sh->is_array()) return bad("missing or non-array 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2) return bad("'data_offsets' must be [begin, end]");
    TensorInfo info;
    info.name = name;
    auto dtype = ParseDType(dt->get<std::string>());
    if (!dtype.ok()) return bad(dtype.status().message());
    info.dtype = *dtype;
    uint64_t expected = DTypeSize(info.dtype);
    // Every prefix of the element count fits int64 (numel() multiplies in this order; a later
    // 0 would hide an overflow from the byte count).
    uint64_t elements = 1;
    constexpr auto kMaxInt64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim > kMaxInt64 || MulOverflow(expected, dim, &expected) || MulOverflow(elements, dim, &elements) ||
          elements > kMaxInt64)
        return bad("shape overflows");
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const json& o : *off)
      if (!o.is_number_unsigned()) return bad("data_offsets must be non-negative integers");
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    if (info.end < info.begin) return bad(absl::StrCat("data_offsets end ", info.end, " < begin ", info.begin));
    if (info.end > data_size)
      return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end, ") out of range of the ",
                              data_size, "-byte data section"));
    if (info.nbytes() != expected)
      return bad(absl::StrCat("byte length ", info.nbytes(), " does not match shape x dtype = ", expected));
    index_[name] = 0;  // fixed up after sorting
    tensors_.push_back(std::move(info));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  // Compared with the last non-empty tensor, not the previous one: an empty tensor in between
  // must not hide an overlap.
  const TensorInfo* previous = nullptr;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& t = tensors_[i];
    if (t.nbytes() > 0) {
      if (previous != nullptr && t.begin < previous->end)
        return Malformed(absl::StrCat("tensors '", previous->name, "' and '", t.name, "' overlap in the data section"));
      previous = &t;
    }
    index_[t.name] = i;
  }
  return absl::OkStatus();
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<TensorView> SafetensorsFile::Get(std::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) return absl::NotFoundError(absl::StrCat("tensor '", absl::string_view(name.data(), name.size()), "' not in ", path_));
  return TensorView{info, DataOf(*info)};
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (!seen.insert(t.name).second) return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", t.name, "'"));
    if (t.name == "__metadata__") return absl::InvalidArgumentError("'__metadata__' is reserved");
    uint64_t expected = DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': negative dimension"));
      expected *= static_cast<uint64_t>(d);
    }
    if (expected != t.nbytes)
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': ", t.nbytes,
                                                     " bytes given, shape x dtype needs ", expected));
    if (t.nbytes > 0 && t.data == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': null data"));
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))}, {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data section is 8-byte aligned
  QATD_ASSIGN_OR_RETURN(AtomicFileWriter out, AtomicFileWriter::Create(path));
  char len[8];
  uint64_t hl = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>(static_cast<uint8_t>(hl >> (8 * i)));
  QATD_RETURN_IF_ERROR(out.Append(std::string_view(len, 8)));
  QATD_RETURN_IF_ERROR(out.Append(text));
  for (const auto& t : tensors) {
    if (t.nbytes > 0) QATD_RETURN_IF_ERROR(out.Append(std::string_view(static_cast<const char*>(t.data), t.nbytes)));
  }
  return out.Commit();
}

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::string& path) {
  namespace fs = std::filesystem;
  Checkpoint ck;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    QATD_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(path));
    ck.files_.push_back(f);
  } else if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    const fs::path index = dir / "model.safetensors.index.json";
    const fs::path single = dir / "model.safetensors";
    if (fs::exists(index, ec)) {
      std::ifstream in(index);
      std::stringstream ss;
      ss << in.rdbuf();
      json j = json::parse(ss.str(), nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        return absl::InvalidArgumentError(absl::StrCat(index.string(), ": expected a JSON object with 'weight_map'"));
      std::map<std::string, size_t> file_ids;
      std::vector<std::pair<std::string, std::string>> wanted;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        if (!it.value().is_string())
          return absl::InvalidArgumentError(absl::StrCat(index.string(), ": weight_map['", it.key(), "'] is not a file name"));
        std::string shard = it.value().get<std::string>();
        if (shard.find('/') != std::string::npos || shard == "..")
          return absl::InvalidArgumentError(absl::StrCat(index.string(), ": shard name '", shard, "' must be a plain file name"));
        wanted.emplace_back(it.key(), shard);
        if (!file_ids.count(shard)) {
          QATD_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open((dir / shard).string()));
          file_ids[shard] = ck.files_.size();
          ck.files_.push_back(f);
        }
      }
      for (const auto& [name, shard] : wanted) {
        if (ck.files_[file_ids[shard]]->Find(name) == nullptr)
          return absl::InvalidArgumentError(absl::StrCat(index.string(), ": tensor '", name, "' is listed in ", shard, " but not stored there"));
        ck.where_[name] = file_ids[shard];
      }
      return ck;
    } else if (fs::exists(single, ec)) {
      QATD_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single.string()));
      ck.files_.push_back(f);
    } else {
      return absl::NotFoundError(absl::StrCat(path, ": neither model.safetensors nor model.safetensors.index.json"));
    }
  } else {
    return absl::NotFoundError(absl::StrCat("no such checkpoint: ", path));
  }
  for (size_t i = 0; i < ck.files_.size(); ++i)
    for (const auto& t : ck.files_[i]->tensors()) ck.where_[t.name] = i;
  return ck;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

bool Checkpoint::Has(std::string_view name) const { return where_.find(name) != where_.end(); }

absl::StatusOr<TensorView> Checkpoint::Get(std::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return absl::NotFoundError(absl::StrCat("tensor '", absl::string_view(name.data(), name.size()), "' not in checkpoint"));
  return files_[it->second]->Get(name);
}

}  // namespace qatd::model

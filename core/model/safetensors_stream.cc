#include "core/model/safetensors_stream.h"

#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/common/sha256.h"
#include "core/common/status_macros.h"

namespace qatd::model {

uint64_t TensorHeader::nbytes() const {
  uint64_t n = DTypeSize(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

absl::StatusOr<SafetensorsStreamWriter> SafetensorsStreamWriter::Create(
    const std::string& path, std::vector<TensorHeader> tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorHeader& t : tensors) {
    if (!seen.insert(t.name).second) return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", t.name, "'"));
    if (t.name == "__metadata__") return absl::InvalidArgumentError("'__metadata__' is reserved");
    for (int64_t d : t.shape) {
      if (d < 0) return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': negative dimension"));
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))}, {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  QATD_ASSIGN_OR_RETURN(AtomicFileWriter out, AtomicFileWriter::Create(path));
  auto owned = std::make_unique<AtomicFileWriter>(std::move(out));
  char len[8];
  const uint64_t hl = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>(static_cast<uint8_t>(hl >> (8 * i)));
  QATD_RETURN_IF_ERROR(owned->Append(std::string_view(len, 8)));
  QATD_RETURN_IF_ERROR(owned->Append(text));
  return SafetensorsStreamWriter(std::move(owned), std::move(tensors), 8 + hl + offset);
}

absl::Status SafetensorsStreamWriter::Append(std::string_view name, const void* data, size_t nbytes) {
  if (next_ >= tensors_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("tensor '", std::string(name), "' is not in the header"));
  }
  const TensorHeader& t = tensors_[next_];
  if (name != t.name) {
    return absl::FailedPreconditionError(
        absl::StrCat("tensor '", std::string(name), "' appended where the header has '", t.name, "' next"));
  }
  if (nbytes != t.nbytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", t.name, "': ", nbytes, " bytes given, the header says ", t.nbytes()));
  }
  if (nbytes > 0 && data == nullptr) return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': null data"));
  Sha256 hash;
  hash.Update(data, nbytes);
  sha256_[t.name] = hash.FinishHex();
  if (nbytes > 0) QATD_RETURN_IF_ERROR(out_->Append(std::string_view(static_cast<const char*>(data), nbytes)));
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsStreamWriter::Commit() {
  if (next_ != tensors_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(tensors_.size() - next_, " tensors of the header were not appended, the first '",
                                                      tensors_[next_].name, "'"));
  }
  return out_->Commit();
}

}  // namespace qatd::model

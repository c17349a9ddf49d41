#pragma once
// Reads the state dicts that Python's `torch.save(model.state_dict(), path)` writes (the
// reference's model_state_dict.pt / best_state_dict.pt / v2_*.pt, spec §12) and the wrapper
// {'model_state_dict': {...}, 'config': {...}} of convert_v1_to_v2.py (spec §5), safely:
// the zip archive is read with LibTorch's caffe2::serialize::PyTorchStreamReader, data.pkl
// with qatd's own pickle interpreter (torch_pickle.h: a whitelist of opcodes and globals,
// nothing is executed), and each tensor is a view (offset, sizes, strides, dtype) of its
// storage record `data/<key>`. Views of one storage share it, as after Python's torch.load.
//
// Files: torch.save's zip format (PyTorch >= 1.6; any archive folder name), records
// little-endian ("byteorder" absent or "little"). The legacy non-zip format is refused.
// Tensors are always CPU tensors with requires_grad false, whatever location they were saved
// from.
//
// Errors name the file and the record, opcode or global:
//   NOT_FOUND         the file cannot be opened
//   INVALID_ARGUMENT  not a zip archive, no data.pkl, a malformed or hostile pickle (an unknown
//                     global such as os.system is refused, never resolved), a missing storage
//                     record or one whose size disagrees with its persistent id, a view
//                     outside its storage, big-endian data, an unsupported storage dtype
//   UNIMPLEMENTED     a pickle opcode or torch global the reader does not handle (from ReadTorchPt;
//                     ReadTorchStateDict then tries LibTorch's own loader first)
//   INTERNAL          LibTorch's zip reader failed (its message kept)

#include <string>
#include <unordered_map>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "core/model/torch_pickle.h"
#include "core/model/torch_pt_writer.h"

namespace qatd::model {

// A .pt file: its object tree, and each kTensor value's tensor (keyed by value index).
struct TorchPtFile {
  PickleDocument pickle;
  std::unordered_map<int, at::Tensor> tensors;
};

// Reads `path` with the safe reader only.
absl::StatusOr<TorchPtFile> ReadTorchPt(const std::string& path);

// The state dict in `path`: the tensor entries of the top-level dict, or of its
// "model_state_dict" entry when that is a dict; in file order, a repeated key keeping its
// first position and its last value (Python's dict); entries that are not str -> tensor are
// skipped. When the safe reader answers UNIMPLEMENTED, LibTorch's torch::jit::pickle_load is
// tried (it reads plain-dict files that use constructs outside the whitelist); if that fails
// too, the safe reader's error is returned with LibTorch's appended. INVALID_ARGUMENT when the
// top-level object is not a dict.
absl::StatusOr<NamedTensors> ReadTorchStateDict(const std::string& path);

}  // namespace qatd::model

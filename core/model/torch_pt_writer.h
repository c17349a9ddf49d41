#pragma once
// Writes a dict of named tensors as Python's `torch.save(state_dict)` does, so that
// `torch.load(f, weights_only=True)` reads it (issue #17 item 4; the reference's
// load_checkpoint always passes weights_only=True, the default since PyTorch 2.6).
//
// The file is torch.save's zip archive (through LibTorch's caffe2::serialize::PyTorchStreamWriter,
// records stored uncompressed and 64-byte aligned):
//   archive/data.pkl     pickle protocol 2: a dict {name: tensor}, each tensor
//                        torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
//                        collections.OrderedDict()) with the persistent id
//                        ('storage', torch.<Dtype>Storage, '<i>', 'cpu', numel)
//   archive/byteorder    "little" (as torch >= 2.1 writes it)
//   archive/data/<i>     the i-th tensor's bytes, contiguous, native byte order
//   archive/version      written by the stream writer
//
// Deliberate difference from torch.save: the top-level container is a plain dict, not a
// collections.OrderedDict. Python's torch.load returns a dict (insertion-ordered) that
// load_state_dict takes the same way, but LibTorch's unpickler (torch::jit::pickle_load) turns
// an OrderedDict into None; a plain dict reads back in LibTorch 1.13 and 2.x alike. (qatd reads
// seed files with its own reader, torch_state_dict.h, which takes both.)
//
// Supported dtypes: float32, float64, float16, bfloat16, uint8, int8, int16, int32, int64,
// bool. Tensors may live on any device and be non-contiguous views (they are copied to
// contiguous CPU memory first). Two entries that share storage are written twice.

#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qatd::model {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The file bytes. INVALID_ARGUMENT naming the entry for an unsupported dtype or an empty name;
// INTERNAL when LibTorch fails.
absl::StatusOr<std::string> SerializeTorchPt(const NamedTensors& tensors);

// SerializeTorchPt written to `path` atomically (temp file, fsync, rename).
absl::Status WriteTorchPt(const std::string& path, const NamedTensors& tensors);

}  // namespace qatd::model

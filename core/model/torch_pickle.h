#pragma once
// A safe interpreter for the pickle that Python's torch.save writes as `data.pkl` (a state
// dict, or a dict around one). It never runs code: it knows a fixed set of opcodes and
// globals, builds a tree of plain values, and turns the few torch callables a state dict uses
// into descriptions of tensors (which storage, offset, sizes, strides). LibTorch-free; the
// tensors are made from the archive's storage records by torch_state_dict.h.
//
// Why our own: LibTorch's unpickler (torch::jit::pickle_load, 1.13 and 2.x) cannot rebuild
// collections.OrderedDict, so every `torch.save(model.state_dict(), f)` file fails in it with
// "Expected GenericDict but got None".
//
// Opcodes (protocol 2, what torch.save writes, and protocol 4's extras): PROTO, FRAME, STOP,
// MARK, NONE, NEWTRUE, NEWFALSE, BININT, BININT1, BININT2, LONG1 (up to 8 bytes), BINFLOAT,
// BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, EMPTY_TUPLE, TUPLE, TUPLE1-3, EMPTY_LIST,
// APPEND, APPENDS, EMPTY_DICT, SETITEM, SETITEMS, BINPUT, LONG_BINPUT, MEMOIZE, BINGET,
// LONG_BINGET, GLOBAL, STACK_GLOBAL, REDUCE, BUILD, BINPERSID.
// Globals: collections.OrderedDict (called with no arguments: an empty dict),
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter(_with_state), and the
// storage classes torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage
// (only inside a persistent id). BUILD is accepted on a dict (OrderedDict's `_metadata`
// state) and ignored. Persistent ids are ('storage', torch.<X>Storage, key, location, numel).
//
// Errors (each names the opcode or global and its byte offset in the pickle):
//   INVALID_ARGUMENT  malformed input (truncated, stack underflow, a value of the wrong kind,
//                     a view outside its storage) or a global outside the list that is not
//                     torch's (os.system, builtins.eval, ...: refused, never resolved);
//                     torch.storage._load_from_bytes (legacy storages inside the pickle)
//   UNIMPLEMENTED     a well-known pickle opcode or a torch.* global this reader does not
//                     handle (the caller may then try LibTorch's own loader)
// Limits: at most kMaxPickleValues values are built (a hostile input cannot exhaust memory
// through the memo); dict keys are kept in order with duplicates (a later SETITEM of the same
// key wins when the consumer builds a map, as in Python).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qatd::model {

inline constexpr int64_t kMaxPickleValues = 50'000'000;

// A storage of the archive: record "data/<key>", `numel` elements of `dtype` (the storage
// class name without "Storage": "Float", "BFloat16", ...).
struct PickleStorage {
  std::string key;
  std::string dtype;
  std::string location;  // "cpu", "cuda:0", ... (informational: tensors are read to the CPU)
  int64_t numel = 0;
};

// A tensor view of storage `storage` (a value index of kind kStorage): element `offset` of the
// storage is element [0, ..., 0]; checked to lie inside the storage.
struct PickleTensor {
  int storage = -1;
  int64_t offset = 0;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  bool requires_grad = false;
};

struct PickleValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                  // kString; kGlobal: "module.name"
  std::vector<int> items;                         // kTuple, kList: value indices
  std::vector<std::pair<int, int>> entries;       // kDict: (key, value) indices, insertion order
  PickleStorage storage;                          // kStorage
  PickleTensor tensor;                            // kTensor
};

// The unpickled object: values refer to each other by index (a memoized value may be shared
// and even contain itself, so walk it with care), `root` is what STOP returned.
struct PickleDocument {
  std::vector<PickleValue> values;
  int root = -1;

  const PickleValue& at(int index) const { return values[static_cast<size_t>(index)]; }
  // The value of the string key `key` in dict `dict` (the last one when repeated); -1 if absent
  // or `dict` is not a dict.
  int Find(int dict, absl::string_view key) const;
};

// Kind name for messages ("dict", "tensor", ...).
const char* PickleKindName(PickleValue::Kind kind);

// Interprets `pickle` (the bytes of data.pkl) up to its STOP. Trailing bytes after STOP are
// ignored, as Python does.
absl::StatusOr<PickleDocument> ParseTorchPickle(absl::string_view pickle);

}  // namespace qatd::model

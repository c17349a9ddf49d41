#include "core/model/torch_pickle.h"

#include <cstring>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/common/status_macros.h"

namespace qatd::model {
namespace {

using Kind = PickleValue::Kind;

constexpr int kMaxDims = 64;
constexpr const char* kStorageClasses[] = {"Float", "Double", "Half", "BFloat16", "Long",
                                           "Int",   "Short",  "Char", "Byte",     "Bool"};

// Names of every opcode of pickle protocols 0-5 (for messages); nullptr: not an opcode.
const char* OpcodeName(uint8_t op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return nullptr;
  }
}

// Checked a * b and a + b for non-negative int64 values.
bool MulOk(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }
bool AddOk(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }

class Unpickler {
 public:
  explicit Unpickler(absl::string_view data) : data_(data) {}

  absl::StatusOr<PickleDocument> Run() {
    while (true) {
      if (pos_ >= data_.size()) return Error(absl::StrCat("the pickle ends at byte ", data_.size(), " before its STOP"));
      op_offset_ = pos_;
      op_ = static_cast<uint8_t>(data_[pos_++]);
      bool stop = false;
      QATD_RETURN_IF_ERROR(Step(&stop));
      if (stop) return std::move(doc_);
    }
  }

 private:
  // An error at the current opcode: "<what> (opcode NAME at offset N)".
  absl::Status Error(absl::string_view what) const {
    const char* name = OpcodeName(op_);
    return absl::InvalidArgumentError(
        absl::StrFormat("%s (pickle opcode %s at offset %d)", std::string(what), name ? name : "?", op_offset_));
  }

  absl::Status Step(bool* stop) {
    switch (op_) {
      case 0x80: {  // PROTO
        QATD_ASSIGN_OR_RETURN(uint64_t v, ReadLe(1));
        if (v > 5) return Error(absl::StrCat("pickle protocol ", v, " is newer than 5"));
        return absl::OkStatus();
      }
      case 0x95: return ReadLe(8).status();  // FRAME: a length hint
      case '.': {                            // STOP
        QATD_ASSIGN_OR_RETURN(doc_.root, Pop());
        *stop = true;
        return absl::OkStatus();
      }
      case '(': marks_.push_back(stack_.size()); return absl::OkStatus();
      case 'N': return PushNew(Kind::kNone).status();
      case 0x88:
      case 0x89: {
        QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kBool));
        doc_.values[v].b = op_ == 0x88;
        return absl::OkStatus();
      }
      case 'J': {
        QATD_ASSIGN_OR_RETURN(uint64_t v, ReadLe(4));
        return PushInt(static_cast<int32_t>(static_cast<uint32_t>(v)));
      }
      case 'K': {
        QATD_ASSIGN_OR_RETURN(uint64_t v, ReadLe(1));
        return PushInt(static_cast<int64_t>(v));
      }
      case 'M': {
        QATD_ASSIGN_OR_RETURN(uint64_t v, ReadLe(2));
        return PushInt(static_cast<int64_t>(v));
      }
      case 0x8a: return Long1();
      case 'G': {
        QATD_ASSIGN_OR_RETURN(absl::string_view raw, ReadBytes(8));
        uint64_t bits = 0;
        for (char c : raw) bits = (bits << 8) | static_cast<uint8_t>(c);  // big-endian
        double d;
        std::memcpy(&d, &bits, sizeof d);
        QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kFloat));
        doc_.values[v].f = d;
        return absl::OkStatus();
      }
      case 'X': return PushString(4);
      case 0x8c: return PushString(1);
      case 0x8d: return PushString(8);
      case ')': return PushNew(Kind::kTuple).status();
      case 't': {
        QATD_ASSIGN_OR_RETURN(std::vector<int> items, PopMark());
        return PushTuple(std::move(items));
      }
      case 0x85:
      case 0x86:
      case 0x87: {
        const size_t n = op_ - 0x84;
        if (stack_.size() < n + Floor()) return Error(absl::StrCat("TUPLE", n, " needs ", n, " values on the stack"));
        std::vector<int> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        return PushTuple(std::move(items));
      }
      case ']': return PushNew(Kind::kList).status();
      case 'a': {
        QATD_ASSIGN_OR_RETURN(int item, Pop());
        QATD_ASSIGN_OR_RETURN(int list, Top(Kind::kList));
        doc_.values[list].items.push_back(item);
        return absl::OkStatus();
      }
      case 'e': {
        QATD_ASSIGN_OR_RETURN(std::vector<int> items, PopMark());
        QATD_ASSIGN_OR_RETURN(int list, Top(Kind::kList));
        auto& dst = doc_.values[list].items;
        dst.insert(dst.end(), items.begin(), items.end());
        return absl::OkStatus();
      }
      case '}': return PushNew(Kind::kDict).status();
      case 's': {
        QATD_ASSIGN_OR_RETURN(int value, Pop());
        QATD_ASSIGN_OR_RETURN(int key, Pop());
        QATD_ASSIGN_OR_RETURN(int dict, Top(Kind::kDict));
        doc_.values[dict].entries.emplace_back(key, value);
        return absl::OkStatus();
      }
      case 'u': {
        QATD_ASSIGN_OR_RETURN(std::vector<int> items, PopMark());
        if (items.size() % 2 != 0) return Error(absl::StrCat("SETITEMS got ", items.size(), " values, not key/value pairs"));
        QATD_ASSIGN_OR_RETURN(int dict, Top(Kind::kDict));
        for (size_t k = 0; k < items.size(); k += 2) doc_.values[dict].entries.emplace_back(items[k], items[k + 1]);
        return absl::OkStatus();
      }
      case 'q': return Put(1);
      case 'r': return Put(4);
      case 0x94: return Memoize(static_cast<uint32_t>(memo_.size()));
      case 'h': return Get(1);
      case 'j': return Get(4);
      case 'c': return ReadGlobal();
      case 0x93: {  // STACK_GLOBAL
        QATD_ASSIGN_OR_RETURN(int name, Pop());
        QATD_ASSIGN_OR_RETURN(int module, Pop());
        if (doc_.at(name).kind != Kind::kString || doc_.at(module).kind != Kind::kString) {
          return Error("STACK_GLOBAL needs a module and a name string");
        }
        return PushGlobal(doc_.at(module).s, doc_.at(name).s);
      }
      case 'R': return Reduce();
      case 'b': {  // BUILD: only OrderedDict's state ({'_metadata': ...}), ignored
        QATD_ASSIGN_OR_RETURN(int state, Pop());
        (void)state;
        if (stack_.size() <= Floor()) return Error("BUILD on an empty stack");
        const PickleValue& target = doc_.at(stack_.back());
        if (target.kind != Kind::kDict) {
          return absl::UnimplementedError(absl::StrFormat(
              "pickle opcode BUILD at offset %d sets the state of a %s; only a dict's (OrderedDict._metadata) is supported",
              op_offset_, PickleKindName(target.kind)));
        }
        return absl::OkStatus();
      }
      case 'Q': return PersistentId();
      default: break;
    }
    if (const char* name = OpcodeName(op_)) {
      return absl::UnimplementedError(absl::StrFormat(
          "pickle opcode %s (0x%02x) at offset %d is not supported by the state-dict reader", name, op_, op_offset_));
    }
    return Error(absl::StrFormat("unknown pickle opcode 0x%02x: not a pickle, or a corrupt one", op_));
  }

  // Values below the innermost MARK belong to the enclosing construct.
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }

  absl::StatusOr<absl::string_view> ReadBytes(uint64_t n) {
    if (n > data_.size() - pos_) {
      return Error(absl::StrCat("needs ", n, " more bytes, but the pickle has ", data_.size() - pos_, " left"));
    }
    absl::string_view out(data_.data() + pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return out;
  }

  absl::StatusOr<uint64_t> ReadLe(int n) {
    QATD_ASSIGN_OR_RETURN(absl::string_view raw, ReadBytes(static_cast<uint64_t>(n)));
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(raw[static_cast<size_t>(k)]);
    return v;
  }

  absl::StatusOr<absl::string_view> ReadLine() {
    const size_t end = data_.find('\n', pos_);
    if (end == absl::string_view::npos) return Error("a GLOBAL line has no newline: the pickle is truncated");
    absl::string_view line = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return line;
  }

  absl::StatusOr<int> PushNew(Kind kind) {
    if (static_cast<int64_t>(doc_.values.size()) >= kMaxPickleValues) {
      return Error(absl::StrCat("the pickle builds more than ", kMaxPickleValues, " values"));
    }
    doc_.values.emplace_back();
    doc_.values.back().kind = kind;
    const int index = static_cast<int>(doc_.values.size() - 1);
    stack_.push_back(index);
    return index;
  }

  absl::Status PushInt(int64_t value) {
    QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kInt));
    doc_.values[v].i = value;
    return absl::OkStatus();
  }

  absl::Status Long1() {
    QATD_ASSIGN_OR_RETURN(uint64_t n, ReadLe(1));
    if (n > 8) {
      return absl::UnimplementedError(
          absl::StrFormat("pickle opcode LONG1 at offset %d holds a %d-byte integer; at most 8 are supported", op_offset_, n));
    }
    if (n == 0) return PushInt(0);
    QATD_ASSIGN_OR_RETURN(uint64_t raw, ReadLe(static_cast<int>(n)));
    if (n < 8 && (raw >> (8 * n - 1)) & 1) raw |= ~uint64_t{0} << (8 * n);  // sign-extend
    return PushInt(static_cast<int64_t>(raw));
  }

  absl::Status PushString(int length_bytes) {
    QATD_ASSIGN_OR_RETURN(uint64_t n, ReadLe(length_bytes));
    QATD_ASSIGN_OR_RETURN(absl::string_view text, ReadBytes(n));
    QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kString));
    doc_.values[v].s = std::string(text);
    return absl::OkStatus();
  }

  absl::Status PushTuple(std::vector<int> items) {
    QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kTuple));
    doc_.values[v].items = std::move(items);
    return absl::OkStatus();
  }

  absl::StatusOr<int> Pop() {
    if (stack_.size() <= Floor()) return Error("the stack is empty (a value is missing)");
    const int v = stack_.back();
    stack_.pop_back();
    return v;
  }

  absl::StatusOr<int> Top(Kind kind) {
    if (stack_.size() <= Floor()) return Error(absl::StrCat("expects a ", PickleKindName(kind), " on an empty stack"));
    const int v = stack_.back();
    if (doc_.at(v).kind != kind) {
      return Error(absl::StrCat("expects a ", PickleKindName(kind), ", found a ", PickleKindName(doc_.at(v).kind)));
    }
    return v;
  }

  absl::StatusOr<std::vector<int>> PopMark() {
    if (marks_.empty()) return Error("no MARK before it");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<int> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }

  absl::Status Put(int index_bytes) {
    QATD_ASSIGN_OR_RETURN(uint64_t index, ReadLe(index_bytes));
    return Memoize(static_cast<uint32_t>(index));
  }

  absl::Status Memoize(uint32_t index) {
    if (stack_.size() <= Floor()) return Error("memoizes from an empty stack");
    memo_[index] = stack_.back();
    return absl::OkStatus();
  }

  absl::Status Get(int index_bytes) {
    QATD_ASSIGN_OR_RETURN(uint64_t index, ReadLe(index_bytes));
    auto it = memo_.find(static_cast<uint32_t>(index));
    if (it == memo_.end()) return Error(absl::StrCat("memo entry ", index, " was never stored"));
    stack_.push_back(it->second);
    return absl::OkStatus();
  }

  absl::Status ReadGlobal() {
    QATD_ASSIGN_OR_RETURN(absl::string_view module, ReadLine());
    QATD_ASSIGN_OR_RETURN(absl::string_view name, ReadLine());
    return PushGlobal(module, name);
  }

  // The whitelist. Anything else is refused before it could mean anything.
  absl::Status PushGlobal(absl::string_view module, absl::string_view name) {
    const std::string full = absl::StrCat(module, ".", name);
    bool allowed = full == "collections.OrderedDict" || full == "torch._utils._rebuild_tensor_v2" ||
                   full == "torch._utils._rebuild_parameter" || full == "torch._utils._rebuild_parameter_with_state";
    for (const char* storage : kStorageClasses) allowed |= full == absl::StrCat("torch.", storage, "Storage");
    if (!allowed) {
      if (full == "torch.storage._load_from_bytes") {
        return Error(
            "global torch.storage._load_from_bytes (a storage pickled inside data.pkl, torch.save's legacy "
            "format) is not supported: re-save the file with torch.save's default zip format");
      }
      if (module == "torch" || absl::StartsWith(module, "torch.")) {
        return absl::UnimplementedError(absl::StrFormat(
            "pickle global %s at offset %d is not supported by the state-dict reader", full, op_offset_));
      }
      return Error(absl::StrCat("global ", full,
                                " is refused: a state dict only uses collections.OrderedDict, torch._utils._rebuild_* "
                                "and torch.<Dtype>Storage"));
    }
    QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kGlobal));
    doc_.values[v].s = full;
    return absl::OkStatus();
  }

  absl::Status PersistentId() {
    QATD_ASSIGN_OR_RETURN(int pid, Pop());
    const PickleValue& t = doc_.at(pid);
    auto is = [&](size_t k, Kind kind) { return doc_.at(t.items[k]).kind == kind; };
    if (t.kind != Kind::kTuple || t.items.size() != 5 || !is(0, Kind::kString) || doc_.at(t.items[0]).s != "storage" ||
        !is(1, Kind::kGlobal) || !is(2, Kind::kString) || !is(3, Kind::kString) || !is(4, Kind::kInt)) {
      return Error("a persistent id must be ('storage', torch.<Dtype>Storage, key, location, numel)");
    }
    PickleStorage s;
    const std::string& cls = doc_.at(t.items[1]).s;
    if (!absl::StartsWith(cls, "torch.") || !absl::EndsWith(cls, "Storage")) {
      return Error(absl::StrCat("persistent id names ", cls, ", not a torch.<Dtype>Storage"));
    }
    s.dtype = cls.substr(6, cls.size() - 6 - 7);
    s.key = doc_.at(t.items[2]).s;
    s.location = doc_.at(t.items[3]).s;
    s.numel = doc_.at(t.items[4]).i;
    if (s.key.empty() || s.key.size() > 64 ||
        s.key.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_") != std::string::npos) {
      return Error(absl::StrCat("storage key \"", s.key, "\" is not a record name (letters, digits, _)"));
    }
    if (s.numel < 0) return Error(absl::StrCat("storage ", s.key, " has ", s.numel, " elements"));
    QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kStorage));
    doc_.values[v].storage = std::move(s);
    return absl::OkStatus();
  }

  absl::Status Reduce() {
    QATD_ASSIGN_OR_RETURN(int args_index, Pop());
    QATD_ASSIGN_OR_RETURN(int callable_index, Pop());
    const PickleValue& callable = doc_.at(callable_index);
    if (callable.kind != Kind::kGlobal) return Error(absl::StrCat("calls a ", PickleKindName(callable.kind)));
    const std::string fn = callable.s;
    if (doc_.at(args_index).kind != Kind::kTuple) return Error(absl::StrCat(fn, " is called without an argument tuple"));
    const std::vector<int> args = doc_.at(args_index).items;
    if (fn == "collections.OrderedDict") {
      if (!args.empty()) return Error("collections.OrderedDict is called with arguments (expected none)");
      return PushNew(Kind::kDict).status();
    }
    if (fn == "torch._utils._rebuild_tensor_v2") return RebuildTensor(args);
    if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
      const size_t want = fn == "torch._utils._rebuild_parameter" ? 3 : 4;
      if (args.size() != want || doc_.at(args[0]).kind != Kind::kTensor || doc_.at(args[1]).kind != Kind::kBool) {
        return Error(absl::StrCat(fn, " needs (tensor, requires_grad", want == 4 ? ", hooks, state)" : ", hooks)"));
      }
      QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kTensor));
      doc_.values[v].tensor = doc_.at(args[0]).tensor;
      doc_.values[v].tensor.requires_grad = doc_.at(args[1]).b;
      return absl::OkStatus();
    }
    return Error(absl::StrCat(fn, " is not callable"));
  }

  absl::StatusOr<std::vector<int64_t>> IntTuple(int index, const char* what) {
    const PickleValue& t = doc_.at(index);
    if (t.kind != Kind::kTuple) return Error(absl::StrCat("_rebuild_tensor_v2's ", what, " is not a tuple"));
    if (t.items.size() > kMaxDims) return Error(absl::StrCat("_rebuild_tensor_v2's ", what, " has more than ", kMaxDims, " dims"));
    std::vector<int64_t> out;
    for (int item : t.items) {
      if (doc_.at(item).kind != Kind::kInt || doc_.at(item).i < 0) {
        return Error(absl::StrCat("_rebuild_tensor_v2's ", what, " holds a value that is not an integer >= 0"));
      }
      out.push_back(doc_.at(item).i);
    }
    return out;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  absl::Status RebuildTensor(const std::vector<int>& args) {
    if (args.size() != 6 && args.size() != 7) {
      return Error(absl::StrCat("_rebuild_tensor_v2 takes 6 or 7 arguments, got ", args.size()));
    }
    if (doc_.at(args[0]).kind != Kind::kStorage) return Error("_rebuild_tensor_v2's first argument is not a storage");
    if (doc_.at(args[1]).kind != Kind::kInt || doc_.at(args[1]).i < 0) {
      return Error("_rebuild_tensor_v2's storage offset is not an integer >= 0");
    }
    if (doc_.at(args[4]).kind != Kind::kBool) return Error("_rebuild_tensor_v2's requires_grad is not a bool");
    PickleTensor t;
    t.storage = args[0];
    t.offset = doc_.at(args[1]).i;
    QATD_ASSIGN_OR_RETURN(t.sizes, IntTuple(args[2], "size"));
    QATD_ASSIGN_OR_RETURN(t.strides, IntTuple(args[3], "stride"));
    t.requires_grad = doc_.at(args[4]).b;
    if (t.sizes.size() != t.strides.size()) {
      return Error(absl::StrCat("_rebuild_tensor_v2 has ", t.sizes.size(), " sizes but ", t.strides.size(), " strides"));
    }
    // The last element the view touches must lie inside the storage.
    const PickleStorage& s = doc_.at(t.storage).storage;
    int64_t numel = 1, last = t.offset;
    bool ok = true;
    for (size_t d = 0; d < t.sizes.size() && ok; ++d) {
      int64_t step = 0;
      ok = MulOk(numel, t.sizes[d], &numel) && (t.sizes[d] == 0 || (MulOk(t.sizes[d] - 1, t.strides[d], &step) && AddOk(last, step, &last)));
    }
    if (!ok) return Error(absl::StrCat("a tensor view of storage ", s.key, " overflows int64"));
    if (numel == 0 ? t.offset > s.numel : last >= s.numel) {
      return Error(absl::StrCat("a tensor view (offset ", t.offset, ", last element ", last, ") lies outside storage ",
                                s.key, " of ", s.numel, " elements"));
    }
    QATD_ASSIGN_OR_RETURN(int v, PushNew(Kind::kTensor));
    doc_.values[v].tensor = std::move(t);
    return absl::OkStatus();
  }

  absl::string_view data_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  uint8_t op_ = 0;
  PickleDocument doc_;
  std::vector<int> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, int> memo_;
};

}  // namespace

const char* PickleKindName(PickleValue::Kind kind) {
  switch (kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kGlobal: return "global";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

int PickleDocument::Find(int dict, absl::string_view key) const {
  if (dict < 0 || static_cast<size_t>(dict) >= values.size() || at(dict).kind != PickleValue::Kind::kDict) return -1;
  const auto& entries = at(dict).entries;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (at(it->first).kind == PickleValue::Kind::kString && at(it->first).s == key) return it->second;
  }
  return -1;
}

absl::StatusOr<PickleDocument> ParseTorchPickle(absl::string_view pickle) { return Unpickler(pickle).Run(); }

}  // namespace qatd::model

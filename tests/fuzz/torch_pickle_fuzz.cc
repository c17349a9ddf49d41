// The safe pickle interpreter of .pt state dicts (core/model/torch_pickle.cc): ParseTorchPickle
// on data.pkl bytes, as ReadTorchPt runs it before any storage record is read. A pickle that
// parses is then checked the way torch_state_dict.cc uses it: every index refers to a value,
// every tensor view lies inside its storage (the archive reader relies on that), and the
// "model_state_dict" lookup terminates (a dict may contain itself).

#include <cstddef>
#include <cstdint>

#include "core/model/torch_pickle.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using qatd::model::PickleValue;
  absl::StatusOr<qatd::model::PickleDocument> doc =
      qatd::model::ParseTorchPickle(absl::string_view(reinterpret_cast<const char*>(data), size));
  qatd::fuzz::FuzzReport("torch_pickle", doc.status());
  if (!doc.ok()) {
    QATD_FUZZ_CHECK(absl::IsInvalidArgument(doc.status()) || absl::IsUnimplemented(doc.status()));
    return 0;
  }
  const int n = static_cast<int>(doc->values.size());
  auto valid = [n](int i) { return i >= 0 && i < n; };
  QATD_FUZZ_CHECK(valid(doc->root));
  for (const PickleValue& v : doc->values) {
    for (int item : v.items) QATD_FUZZ_CHECK(valid(item));
    for (const auto& [key, value] : v.entries) QATD_FUZZ_CHECK(valid(key) && valid(value));
    if (v.kind != PickleValue::Kind::kTensor) continue;
    const qatd::model::PickleTensor& t = v.tensor;
    QATD_FUZZ_CHECK(valid(t.storage) && doc->at(t.storage).kind == PickleValue::Kind::kStorage);
    QATD_FUZZ_CHECK(t.sizes.size() == t.strides.size() && t.offset >= 0);
    const int64_t numel = doc->at(t.storage).storage.numel;
    int64_t last = t.offset;
    bool empty = false;
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      QATD_FUZZ_CHECK(t.sizes[d] >= 0 && t.strides[d] >= 0);
      empty |= t.sizes[d] == 0;
      if (t.sizes[d] > 0) last += (t.sizes[d] - 1) * t.strides[d];  // checked for overflow by the parser
    }
    QATD_FUZZ_CHECK(empty ? t.offset <= numel : last < numel);
  }
  const int inner = doc->Find(doc->root, "model_state_dict");
  QATD_FUZZ_CHECK(inner == -1 || valid(inner));
  return 0;
}

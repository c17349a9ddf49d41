// safetensors header parse (core/model/safetensors.cc): SafetensorsFile::FromBuffer, the same
// validation Open() runs on a memory-mapped file. A file that passes is then used the way the
// model loader uses it: every tensor found by name, its bytes read (they must lie inside the
// input, which libFuzzer allocates exactly, so ASan sees any overrun).

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "core/model/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using qatd::model::SafetensorsFile;
  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::FromBuffer(data, size);
  qatd::fuzz::FuzzReport("safetensors", file.status());
  if (!file.ok()) {
    QATD_FUZZ_CHECK(absl::IsInvalidArgument(file.status()));
    return 0;
  }
  const SafetensorsFile& f = **file;
  std::set<std::string> names;
  uint64_t previous_end = 0;
  unsigned sink = 0;
  for (const qatd::model::TensorInfo& t : f.tensors()) {
    QATD_FUZZ_CHECK(names.insert(t.name).second);
    QATD_FUZZ_CHECK(t.begin <= t.end && t.end <= size);
    QATD_FUZZ_CHECK(t.nbytes() == static_cast<uint64_t>(t.numel()) * qatd::model::DTypeSize(t.dtype));
    if (t.nbytes() > 0) {
      QATD_FUZZ_CHECK(t.begin >= previous_end);  // sorted, non-overlapping
      previous_end = t.end;
    }
    absl::StatusOr<qatd::model::TensorView> view = f.Get(t.name);
    QATD_FUZZ_CHECK(view.ok() && view->info == f.Find(t.name));
    const auto* bytes = static_cast<const uint8_t*>(view->data);
    for (uint64_t i = 0; i < t.nbytes(); i += 61) sink += bytes[i];
    if (t.nbytes() > 0) sink += bytes[t.nbytes() - 1];
  }
  for (const auto& [key, value] : f.metadata()) sink += static_cast<unsigned>(key.size() + value.size());
  volatile unsigned keep = sink;
  (void)keep;
  return 0;
}

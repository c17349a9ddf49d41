// tokenizer.json parse (core/model/tokenizer_json.cc): Tokenizer::FromJson, what FromFile runs
// on the file's text. A tokenizer that loads is then used: a fixed text (ASCII, added-token
// look-alikes, multi-byte and ill-formed UTF-8) and the first bytes of the input itself are
// encoded and decoded, and ids on and off the vocabulary are looked up.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "core/model/tokenizer.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr std::string_view kSample =
    "Hello, world! <|im_start|>user\n 12345 don't  \t\r\n caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd "
    "\xf0\x9f\x98\x80 <think></think> \xff\xfe\xc3 <|endoftext|><|im_end";

void Exercise(const qatd::model::Tokenizer& tokenizer, std::string_view text) {
  const std::vector<int32_t> ids = tokenizer.Encode(text);
  for (int32_t id : ids) QATD_FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size());
  (void)tokenizer.Decode(ids);
  (void)tokenizer.Decode(ids, /*skip_special_tokens=*/true);
  (void)tokenizer.DecodeBytes(ids);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<qatd::model::Tokenizer> tokenizer = qatd::model::Tokenizer::FromJson(json);
  qatd::fuzz::FuzzReport("tokenizer.json", tokenizer.status());
  if (!tokenizer.ok()) {
    QATD_FUZZ_CHECK(absl::IsInvalidArgument(tokenizer.status()) || absl::IsUnimplemented(tokenizer.status()));
    return 0;
  }
  const qatd::model::Tokenizer& t = *tokenizer;
  Exercise(t, kSample);
  Exercise(t, json.substr(0, 256));
  const int32_t n = t.vocab_size();
  QATD_FUZZ_CHECK(n >= 0);
  const int32_t probes[] = {-1, 0, 1, n / 2, n - 1, n, std::numeric_limits<int32_t>::max()};
  (void)t.Decode(probes);
  for (int32_t id : probes) {
    (void)t.IsSpecial(id);
    const std::optional<std::string> token = t.IdToToken(id);
    if (token.has_value()) {
      // Every named id maps back to an id (an added token may shadow a vocabulary entry).
      QATD_FUZZ_CHECK(t.TokenToId(*token).has_value());
    } else {
      QATD_FUZZ_CHECK(id < 0 || id >= n || !t.IsSpecial(id));
    }
  }
  return 0;
}

#include "core/model/unicode.h"

#include <array>
#include <cstdlib>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "utf8proc.h"

namespace qatd::model {
namespace {

// Scans the UTF-8 sequence at s[pos] following Unicode Table 3-7. Returns the number of bytes
// examined: the full sequence length when well-formed (*valid = true), otherwise the length of
// the maximal subpart of an ill-formed sequence (at least 1, *valid = false).
int ScanUtf8(std::string_view s, size_t pos, char32_t* cp, bool* valid) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t b0 = byte(pos);
  *valid = false;
  if (b0 < 0x80) {
    *cp = b0;
    *valid = true;
    return 1;
  }
  int need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return 1;  // stray continuation byte, C0/C1 or F5..FF
  }
  char32_t value = b0 & (0x3F >> need);
  int len = 1;
  for (int k = 0; k < need; ++k) {
    const size_t i = pos + 1 + k;
    if (i >= s.size()) return len;
    const uint8_t b = byte(i);
    const uint8_t min = k == 0 ? lo : 0x80;
    const uint8_t max = k == 0 ? hi : 0xBF;
    if (b < min || b > max) return len;
    value = (value << 6) | (b & 0x3F);
    ++len;
  }
  *cp = value;
  *valid = true;
  return len;
}

struct ByteAlphabet {
  std::array<char32_t, 256> to_unicode{};
  std::array<std::string, 256> to_unicode_utf8;
  std::array<int16_t, 512> to_byte{};  // every alphabet code point is < U+0144

  ByteAlphabet() {
    to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_unicode[b] = printable ? static_cast<char32_t>(b) : next++;
      AppendUtf8(to_unicode[b], &to_unicode_utf8[b]);
      to_byte[to_unicode[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet* const alphabet = new ByteAlphabet();
  return *alphabet;
}

}  // namespace

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    out->append(kUtf8ReplacementChar);
  } else if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

int DecodeUtf8(std::string_view s, size_t pos, char32_t* cp) {
  bool valid;
  const int len = ScanUtf8(s, pos, cp, &valid);
  return valid ? len : 0;
}

bool IsUnicodeWhitespace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool IsValidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    char32_t cp;
    bool valid;
    pos += ScanUtf8(s, pos, &cp, &valid);
    if (!valid) return false;
  }
  return true;
}

std::string ToValidUtf8Lossy(std::string_view s) {
  if (IsValidUtf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  size_t pos = 0;
  while (pos < s.size()) {
    char32_t cp;
    bool valid;
    const int len = ScanUtf8(s, pos, &cp, &valid);
    if (valid) {
      out.append(s.substr(pos, len));
    } else {
      out.append(kUtf8ReplacementChar);
    }
    pos += len;
  }
  return out;
}

absl::StatusOr<std::string> NfcNormalize(std::string_view s) {
  if (!IsValidUtf8(s)) return absl::InvalidArgumentError("NFC: input is not valid UTF-8");
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find('\n', pos);
    end = end == std::string_view::npos ? s.size() : end + 1;
    const std::string_view line = s.substr(pos, end - pos);
    pos = end;
    // U+0300 is encoded as CC 80: a line whose bytes are all below 0xCC holds only code
    // points below U+0300, which are all NFC_Quick_Check=Yes and never combine.
    bool needs_work = false;
    for (char c : line) {
      if (static_cast<uint8_t>(c) >= 0xCC) {
        needs_work = true;
        break;
      }
    }
    if (!needs_work) {
      out.append(line);
      continue;
    }
    utf8proc_uint8_t* raw = nullptr;
    // Without UTF8PROC_NULLTERM utf8proc processes exactly line.size() bytes, NULs included.
    const utf8proc_ssize_t n = utf8proc_map(
        reinterpret_cast<const utf8proc_uint8_t*>(line.data()),
        static_cast<utf8proc_ssize_t>(line.size()), &raw,
        static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(raw, &std::free);
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("NFC: utf8proc failed: %s", utf8proc_errmsg(n)));
    }
    out.append(reinterpret_cast<const char*>(raw), static_cast<size_t>(n));
  }
  return out;
}

char32_t ByteToUnicode(uint8_t b) { return Alphabet().to_unicode[b]; }

const std::string& ByteToUnicodeUtf8(uint8_t b) { return Alphabet().to_unicode_utf8[b]; }

int UnicodeToByte(char32_t cp) {
  if (cp >= Alphabet().to_byte.size()) return -1;
  return Alphabet().to_byte[cp];
}

}  // namespace qatd::model

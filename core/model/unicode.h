#pragma once
// UTF-8 helpers for the tokenizer: validation, lossy repair, NFC normalization (utf8proc) and
// the GPT-2 byte <-> unicode mapping used by byte-level BPE.
//
// All functions are pure and thread-safe. Strings are UTF-8 byte strings unless stated
// otherwise.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qatd::model {

// U+FFFD REPLACEMENT CHARACTER, UTF-8 encoded.
inline constexpr std::string_view kUtf8ReplacementChar = "\xEF\xBF\xBD";

// Appends the UTF-8 encoding of `cp` to `out`. `cp` must be a Unicode scalar value
// (<= 0x10FFFF, not a surrogate); anything else appends U+FFFD.
void AppendUtf8(char32_t cp, std::string* out);

// Decodes the well-formed UTF-8 sequence starting at `s[pos]`. Returns its length in bytes
// (1-4) and stores the code point in `*cp`; returns 0 when the bytes at `pos` are not a
// well-formed sequence (overlong, surrogate, > U+10FFFF, truncated, stray continuation).
// Requires pos < s.size().
int DecodeUtf8(std::string_view s, size_t pos, char32_t* cp);

// True if `cp` has the Unicode White_Space property (Rust's char::is_whitespace).
bool IsUnicodeWhitespace(char32_t cp);

// True if `s` is entirely well-formed UTF-8.
bool IsValidUtf8(std::string_view s);

// Returns `s` with every ill-formed subsequence replaced by U+FFFD, one replacement per
// maximal subpart (the Unicode "best practice" that Rust's String::from_utf8_lossy and
// Python's bytes.decode(errors="replace") follow). Valid input is returned unchanged.
std::string ToValidUtf8Lossy(std::string_view s);

// Unicode Normalization Form C of `s` (utf8proc, Unicode 15). Errors: INVALID_ARGUMENT if
// `s` is not valid UTF-8. Fast path: lines without code points >= U+0300 are copied as is
// (every such code point is NFC-stable and none composes with a neighbour; '\n' never
// composes either, so lines normalize independently).
absl::StatusOr<std::string> NfcNormalize(std::string_view s);

// The GPT-2 byte-level alphabet: byte b maps to one printable code point. Bytes '!'..'~',
// 0xA1..0xAC and 0xAE..0xFF map to themselves; the remaining 68 bytes map, in increasing
// order, to U+0100, U+0101, ... (so ' ' -> U+0120 'Ġ', '\n' -> U+010A 'Ċ').
char32_t ByteToUnicode(uint8_t b);

// The UTF-8 encoding of ByteToUnicode(b) (1 or 2 bytes).
const std::string& ByteToUnicodeUtf8(uint8_t b);

// Inverse of ByteToUnicode: the byte for `cp`, or -1 if `cp` is not in the alphabet.
int UnicodeToByte(char32_t cp);

}  // namespace qatd::model

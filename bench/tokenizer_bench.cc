// tokenizer_bench --tokenizer DIR [--mb 10] [--seed 1]
//
// Encodes about `mb` MiB of varied synthetic text (a seeded mix of a word list and random
// pseudo-words, with capitalisation, punctuation, numbers, contractions, code-ish lines,
// whitespace runs, accented words, Cyrillic, Greek, CJK and emoji) on one thread and prints
// one JSON line:
//   {"bench":"tokenizer","mb":..,"seconds":..,"mb_per_s":..,"tokens":..,"tokens_per_s":..}
// Only Encode is timed (not text generation or tokenizer loading; load_seconds is reported
// separately). Exit status 1 on bad arguments or a tokenizer that fails to load, 2 if the
// ids do not decode back to the NFC text.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/model/tokenizer.h"
#include "core/model/unicode.h"

namespace {

constexpr std::string_view kWords[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "model", "training",
    "quantization", "tokenizer", "gradient", "distillation", "weights", "teacher", "student",
    "layer", "attention", "embedding", "parameters", "throughput", "latency", "government",
    "international", "responsibility", "unprecedented", "extraordinarily", "photosynthesis",
    "Washington", "Paris", "Tokyo", "Qwen", "LibTorch", "GPU", "CPU", "HTTP", "JSON",
    "naïve", "café", "résumé", "Zürich", "São", "Ångström", "Привет", "мир", "Καλημέρα",
    "日本語", "中文", "汉字", "東京", "北京", "你好", "世界", "한국어", "🙂", "🚀", "👩‍💻",
};
// Pseudo-words built from these keep the word cache honest: many pieces are never seen twice.
constexpr std::string_view kSyllables[] = {"ka", "lo", "mi", "ster", "tion", "qu", "ban", "dre",
                                           "ph", "ous", "zy", "ent", "gr", "ai", "ck", "wh",
                                           "ine", "ex", "o", "u"};
constexpr std::string_view kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
constexpr std::string_view kPunct[] = {".", ",", ";", ":", "!", "?", " -", " (", ")", "\"",
                                       "...", " —", "%"};
constexpr std::string_view kCodeLines[] = {
    "    for (int i = 0; i < n; ++i) {\n", "        total += values[i] * 2;\n", "    }\n",
    "def f(x):\n    return x ** 2 + 1\n", "\tif err != nil {\n\t\treturn err\n\t}\n",
    "<div class=\"main\">Hello</div>\n", "SELECT id, name FROM users WHERE id = 42;\n"};

std::string MakeText(size_t target_bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  std::string text;
  text.reserve(target_bytes + 256);
  bool sentence_start = true;
  while (text.size() < target_bytes) {
    const size_t r = pick(1000);
    if (r < 8) {
      text += kCodeLines[pick(std::size(kCodeLines))];
      continue;
    }
    if (r < 30) {
      text += pick(4) == 0 ? "\n\n" : "\n";
      if (pick(10) == 0) text += "   ";
      sentence_start = true;
      continue;
    }
    if (r < 80) {
      absl::StrAppend(&text, " ", rng() % (pick(3) == 0 ? 100000 : 100));
      if (pick(4) == 0) absl::StrAppend(&text, ".", rng() % 100);
      continue;
    }
    std::string word;
    if (r > 850) {
      for (size_t k = 1 + pick(4); k > 0; --k) word += kSyllables[pick(std::size(kSyllables))];
    } else {
      word = kWords[pick(std::size(kWords))];
    }
    if (sentence_start && !word.empty() && word[0] >= 'a' && word[0] <= 'z') word[0] -= 32;
    if (pick(200) == 0) {
      for (char& c : word) {
        if (c >= 'a' && c <= 'z') c -= 32;
      }
    }
    if (!sentence_start || !text.empty()) text += pick(50) == 0 ? "  " : " ";
    text += word;
    sentence_start = false;
    if (r < 110) text += kContractions[pick(std::size(kContractions))];
    if (r > 880) {
      const std::string_view p = kPunct[pick(std::size(kPunct))];
      text += p;
      sentence_start = p == "." || p == "!" || p == "?";
    }
  }
  return text;
}

// 1-minute load average of the host (-1 if unknown): a 2-core build machine shared with
// compilers gives slower, noisier numbers, so the result records it.
double LoadAverage() {
  double load = -1.0;
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1.0;
    std::fclose(f);
  }
  return load;
}

int Usage() {
  std::fprintf(stderr, "usage: tokenizer_bench --tokenizer DIR [--mb 10] [--seed 1]\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokenizer_path;
  double mb = 10.0;
  uint32_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return Usage();
    if (arg == "--tokenizer") {
      tokenizer_path = argv[++i];
    } else if (arg == "--mb") {
      mb = std::atof(argv[++i]);
    } else if (arg == "--seed") {
      seed = static_cast<uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else {
      return Usage();
    }
  }
  if (tokenizer_path.empty() || !(mb > 0.0 && mb <= 4096.0)) return Usage();

  using Clock = std::chrono::steady_clock;
  const auto load_start = Clock::now();
  absl::StatusOr<qatd::model::Tokenizer> tokenizer =
      qatd::model::Tokenizer::FromFile(tokenizer_path);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  const double load_seconds =
      std::chrono::duration<double>(Clock::now() - load_start).count();

  const std::string text = MakeText(static_cast<size_t>(mb * 1024 * 1024), seed);
  const auto start = Clock::now();
  const std::vector<int32_t> ids = tokenizer->Encode(text);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  // Sanity check (not timed): byte-level BPE must round-trip the NFC text.
  const absl::StatusOr<std::string> nfc = qatd::model::NfcNormalize(text);
  const bool roundtrip_ok = nfc.ok() && tokenizer->Decode(ids) == *nfc;

  const double text_mb = static_cast<double>(text.size()) / (1024.0 * 1024.0);
  std::printf("%s\n",
              absl::StrFormat("{\"bench\":\"tokenizer\",\"mb\":%.3f,\"seconds\":%.4f,"
                              "\"mb_per_s\":%.3f,\"tokens\":%d,\"tokens_per_s\":%.0f,"
                              "\"load_seconds\":%.3f,\"threads\":1,\"seed\":%d,"
                              "\"roundtrip_ok\":%s,\"loadavg_1m\":%.2f}",
                              text_mb, seconds, text_mb / seconds, ids.size(),
                              static_cast<double>(ids.size()) / seconds, load_seconds, seed,
                              roundtrip_ok ? "true" : "false", LoadAverage())
                  .c_str());
  return roundtrip_ok ? 0 : 2;
}

#include "tools/demo/demo_data.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/common/file_util.h"
#include "nlohmann/json.hpp"

namespace qatd::kd {
namespace {

// splitmix64 as a stream; Below() rejects the biased tail so results are exact everywhere.
class DemoRng {
 public:
  explicit DemoRng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, m), m > 0.
  int64_t Below(int64_t m) {
    const uint64_t um = static_cast<uint64_t>(m);
    const uint64_t limit = UINT64_MAX - (UINT64_MAX % um);
    uint64_t r;
    do r = Next();
    while (r >= limit);
    return static_cast<int64_t>(r % um);
  }
  // Uniform in [lo, hi].
  int64_t Range(int64_t lo, int64_t hi) { return lo + Below(hi - lo + 1); }
  template <typename T, size_t N>
  const T& Pick(const T (&items)[N]) {
    return items[Below(static_cast<int64_t>(N))];
  }

 private:
  uint64_t state_;
};

struct Pair {
  const char* a;
  const char* b;
};

constexpr Pair kCapitals[] = {
    {"France", "Paris"},        {"Germany", "Berlin"},     {"Italy", "Rome"},
    {"Spain", "Madrid"},        {"Portugal", "Lisbon"},    {"Japan", "Tokyo"},
    {"China", "Beijing"},       {"India", "New Delhi"},    {"Egypt", "Cairo"},
    {"Kenya", "Nairobi"},       {"Canada", "Ottawa"},      {"Mexico", "Mexico City"},
    {"Brazil", "Brasilia"},     {"Argentina", "Buenos Aires"}, {"Peru", "Lima"},
    {"Russia", "Moscow"},       {"Poland", "Warsaw"},      {"Greece", "Athens"},
    {"Norway", "Oslo"},         {"Sweden", "Stockholm"},   {"Finland", "Helsinki"},
    {"Ireland", "Dublin"},      {"Austria", "Vienna"},     {"Turkey", "Ankara"},
    {"Australia", "Canberra"},  {"Thailand", "Bangkok"},   {"Vietnam", "Hanoi"},
    {"Chile", "Santiago"},      {"Cuba", "Havana"},        {"Iran", "Tehran"},
};

constexpr Pair kOpposites[] = {
    {"hot", "cold"},     {"big", "small"},    {"fast", "slow"},    {"up", "down"},
    {"day", "night"},    {"happy", "sad"},    {"open", "closed"},  {"light", "dark"},
    {"old", "new"},      {"early", "late"},   {"full", "empty"},   {"hard", "soft"},
    {"high", "low"},     {"wet", "dry"},      {"strong", "weak"},  {"rich", "poor"},
    {"long", "short"},   {"loud", "quiet"},   {"clean", "dirty"},  {"thick", "thin"},
    {"inside", "outside"}, {"left", "right"}, {"push", "pull"},    {"win", "lose"},
};

// (thing, colour); the thing carries its article.
constexpr Pair kColors[] = {
    {"the sky", "blue"},       {"grass", "green"},       {"a banana", "yellow"},
    {"snow", "white"},         {"coal", "black"},        {"a ripe tomato", "red"},
    {"an orange", "orange"},   {"a lemon", "yellow"},    {"the sun", "yellow"},
    {"a strawberry", "red"},   {"milk", "white"},        {"a carrot", "orange"},
    {"a frog", "green"},       {"chocolate", "brown"},   {"the ocean", "blue"},
    {"a crow", "black"},       {"a lime", "green"},      {"an eggplant", "purple"},
    {"a pumpkin", "orange"},   {"a cloud", "white"},     {"a plum", "purple"},
    {"blood", "red"},          {"a flamingo", "pink"},   {"an elephant", "gray"},
};

constexpr const char* kWords[] = {
    "cat", "dog", "sun", "tree", "book", "fish", "bird", "milk", "star", "moon",
    "rain", "door", "lamp", "cake", "ship", "frog", "road", "ring", "hat", "cup",
    "apple", "house", "water", "green", "river", "stone", "light", "music", "bread", "chair",
};

constexpr Pair kDefinitions[] = {
    {"cat", "A cat is a small animal that says meow."},
    {"dog", "A dog is a loyal animal that barks."},
    {"tree", "A tree is a tall plant with a trunk and leaves."},
    {"book", "A book is a set of pages with words to read."},
    {"river", "A river is a large stream of water that flows to the sea."},
    {"sun", "The sun is the star at the center of our solar system."},
    {"moon", "The moon is the rock that circles the Earth at night."},
    {"chair", "A chair is a seat with a back for one person."},
    {"bread", "Bread is a food made from flour, water and yeast."},
    {"clock", "A clock is a device that shows the time."},
    {"teacher", "A teacher is a person who helps students learn."},
    {"bridge", "A bridge is a structure that crosses over a river or a road."},
    {"rain", "Rain is water that falls from clouds."},
    {"key", "A key is a small tool that opens a lock."},
    {"map", "A map is a drawing that shows where places are."},
    {"piano", "A piano is a musical instrument with black and white keys."},
    {"island", "An island is land with water all around it."},
    {"doctor", "A doctor is a person who helps sick people get well."},
    {"window", "A window is an opening in a wall that lets in light."},
    {"seed", "A seed is the small part of a plant that grows into a new plant."},
};

constexpr Pair kPlurals[] = {
    {"cat", "cats"},     {"dog", "dogs"},       {"box", "boxes"},     {"child", "children"},
    {"mouse", "mice"},   {"foot", "feet"},      {"tooth", "teeth"},   {"man", "men"},
    {"woman", "women"},  {"goose", "geese"},    {"baby", "babies"},   {"city", "cities"},
    {"leaf", "leaves"},  {"knife", "knives"},   {"bus", "buses"},     {"glass", "glasses"},
    {"sheep", "sheep"},  {"fish", "fish"},      {"person", "people"}, {"book", "books"},
    {"star", "stars"},   {"wolf", "wolves"},    {"story", "stories"}, {"dish", "dishes"},
};

constexpr Pair kSounds[] = {
    {"cow", "moo"},  {"dog", "woof"}, {"cat", "meow"},  {"duck", "quack"}, {"sheep", "baa"},
    {"pig", "oink"}, {"owl", "hoot"}, {"lion", "roar"}, {"snake", "hiss"}, {"horse", "neigh"},
    {"bee", "buzz"}, {"frog", "ribbit"},
};

constexpr const char* kNumberWords[] = {
    "zero",  "one",    "two",      "three",    "four",    "five",    "six",
    "seven", "eight",  "nine",     "ten",      "eleven",  "twelve",  "thirteen",
    "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
};

std::string Capitalize(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string Article(std::string_view noun) {
  return (std::string_view("aeiou").find(noun[0]) != std::string_view::npos) ? "an" : "a";
}

// The patterns; each returns one record from `rng`.
DemoRecord MakeRecord(DemoRng& rng) {
  enum Kind { kAdd, kSub, kMul, kCapital, kOpposite, kColor, kCount, kBackwards, kDefine,
              kPlural, kNextLetter, kNextNumber, kNumberWord, kSort, kAddInput, kSound, kNumKinds };
  DemoRecord r;
  switch (static_cast<Kind>(rng.Below(kNumKinds))) {
    case kAdd: {
      int64_t a = rng.Range(0, 20), b = rng.Range(0, 20);
      r.instruction = absl::StrCat("What is ", a, " plus ", b, "?");
      r.output = absl::StrCat(a, " plus ", b, " is ", a + b, ".");
      break;
    }
    case kSub: {
      int64_t a = rng.Range(0, 20), b = rng.Range(0, a);
      r.instruction = absl::StrCat("What is ", a, " minus ", b, "?");
      r.output = absl::StrCat(a, " minus ", b, " is ", a - b, ".");
      break;
    }
    case kMul: {
      int64_t a = rng.Range(0, 10), b = rng.Range(0, 10);
      r.instruction = absl::StrCat("What is ", a, " times ", b, "?");
      r.output = absl::StrCat(a, " times ", b, " is ", a * b, ".");
      break;
    }
    case kCapital: {
      const Pair& p = rng.Pick(kCapitals);
      r.instruction = rng.Below(2) == 0 ? absl::StrCat("What is the capital of ", p.a, "?")
                                        : absl::StrCat("Name the capital city of ", p.a, ".");
      r.output = absl::StrCat("The capital of ", p.a, " is ", p.b, ".");
      break;
    }
    case kOpposite: {
      const Pair& p = rng.Pick(kOpposites);
      const bool flip = rng.Below(2) == 1;
      const char* word = flip ? p.b : p.a;
      const char* opposite = flip ? p.a : p.b;
      r.instruction = absl::StrCat("What is the opposite of ", word, "?");
      r.output = absl::StrCat("The opposite of ", word, " is ", opposite, ".");
      break;
    }
    case kColor: {
      const Pair& p = rng.Pick(kColors);
      r.instruction = absl::StrCat("What color is ", p.a, "?");
      r.output = absl::StrCat(Capitalize(p.a), " is ", p.b, ".");
      break;
    }
    case kCount: {
      int64_t from = rng.Range(1, 15), to = from + rng.Range(2, 5);
      r.instruction = absl::StrCat("Count from ", from, " to ", to, ".");
      std::vector<std::string> seq;
      for (int64_t i = from; i <= to; ++i) seq.push_back(absl::StrCat(i));
      r.output = absl::StrCat(absl::StrJoin(seq, ", "), ".");
      break;
    }
    case kBackwards: {
      std::string w = rng.Pick(kWords);
      std::string rev(w.rbegin(), w.rend());
      std::vector<std::string> letters;
      for (char c : rev) letters.emplace_back(1, c);
      r.instruction = absl::StrCat("Spell the word ", w, " backwards.");
      r.output = absl::StrCat("Backwards, ", w, " is ", absl::StrJoin(letters, " "), ".");
      break;
    }
    case kDefine: {
      const Pair& p = rng.Pick(kDefinitions);
      r.instruction = rng.Below(2) == 0 ? absl::StrCat("Define the word ", p.a, ".")
                                        : absl::StrCat("What does the word ", p.a, " mean?");
      r.output = p.b;
      break;
    }
    case kPlural: {
      const Pair& p = rng.Pick(kPlurals);
      r.instruction = absl::StrCat("What is the plural of ", p.a, "?");
      r.output = absl::StrCat("The plural of ", p.a, " is ", p.b, ".");
      break;
    }
    case kNextLetter: {
      const char c = static_cast<char>('A' + rng.Below(25));
      r.instruction = absl::StrCat("What letter comes after ", std::string(1, c), "?");
      r.output = absl::StrCat("The letter after ", std::string(1, c), " is ", std::string(1, c + 1), ".");
      break;
    }
    case kNextNumber: {
      int64_t n = rng.Range(0, 99);
      r.instruction = absl::StrCat("What number comes after ", n, "?");
      r.output = absl::StrCat("The number after ", n, " is ", n + 1, ".");
      break;
    }
    case kNumberWord: {
      int64_t n = rng.Range(0, 20);
      r.instruction = "Write the number as a word.";
      r.input = absl::StrCat(n);
      r.output = absl::StrCat(n, " is written as ", kNumberWords[n], ".");
      break;
    }
    case kSort: {
      std::vector<int64_t> v(static_cast<size_t>(rng.Range(3, 5)));
      for (auto& x : v) x = rng.Range(0, 20);
      r.instruction = "Sort the numbers from smallest to largest.";
      r.input = absl::StrJoin(v, ", ");
      std::sort(v.begin(), v.end());
      r.output = absl::StrCat(absl::StrJoin(v, ", "), ".");
      break;
    }
    case kAddInput: {
      int64_t a = rng.Range(0, 20), b = rng.Range(0, 20);
      r.instruction = "Add the numbers.";
      r.input = absl::StrCat(a, " and ", b);
      r.output = absl::StrCat(a, " plus ", b, " is ", a + b, ".");
      break;
    }
    case kSound:
    case kNumKinds: {
      const Pair& p = rng.Pick(kSounds);
      r.instruction = absl::StrCat("What sound does ", Article(p.a), " ", p.a, " make?");
      r.output = absl::StrCat(Capitalize(Article(p.a)), " ", p.a, " says ", p.b, ".");
      break;
    }
  }
  return r;
}

}  // namespace

std::vector<DemoRecord> GenerateDemoRecords(int64_t n, uint64_t seed) {
  n = std::clamp(n, kMinDemoRecords, kMaxDemoRecords);
  // Decorrelate nearby seeds (seed 0 and 1 must not give shifted copies of one stream).
  DemoRng rng(seed * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull);
  std::vector<DemoRecord> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(MakeRecord(rng));
  return out;
}

std::string DemoRecordsToAlpacaJson(const std::vector<DemoRecord>& records) {
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (const DemoRecord& r : records)
    arr.push_back({{"instruction", r.instruction}, {"input", r.input}, {"output", r.output}});
  return arr.dump(1) + "\n";
}

std::string DemoRecordText(const DemoRecord& record) {
  return record.input.empty()
             ? absl::StrCat(record.instruction, " Answer: ", record.output)
             : absl::StrCat(record.instruction, " Input: ", record.input, ". Answer: ", record.output);
}

absl::Status WriteDemoDataset(const std::string& path, int64_t n, uint64_t seed) {
  if (n < kMinDemoRecords || n > kMaxDemoRecords)
    return absl::InvalidArgumentError(
        absl::StrCat("n (records) must be in [", kMinDemoRecords, ", ", kMaxDemoRecords, "], got ", n));
  if (path.empty()) return absl::InvalidArgumentError("path: empty output path");
  const std::vector<DemoRecord> records = GenerateDemoRecords(n, seed);
  std::string data;
  const bool text = path.size() >= 4 && path.compare(path.size() - 4, 4, ".txt") == 0;
  if (text) {
    for (const DemoRecord& r : records) absl::StrAppend(&data, DemoRecordText(r), "\n");
  } else {
    data = DemoRecordsToAlpacaJson(records);
  }
  return WriteFileAtomically(path, data);
}

}  // namespace qatd::kd

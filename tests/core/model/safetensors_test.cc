// safetensors reader/writer tests. LibTorch-free: this file is also built with the parser
// under AddressSanitizer + UBSan (qatd_safetensors_asan_tests).
#include "core/model/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/common/temp_dir.h"

namespace qatd::model {
namespace {

namespace fs = std::filesystem;

using ::qatd::testing::TempDir;

// Builds a raw safetensors image from a header string and a data section.
std::string Image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

absl::Status ParseImage(const std::string& img) { return SafetensorsFile::FromBuffer(img.data(), img.size()).status(); }

TEST(Safetensors, RoundTripAllDtypes) {
  TempDir dir;
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1e-3f};
  std::vector<uint16_t> half = {0x3c00, 0xc000, 0x7bff};
  std::vector<int64_t> i64 = {1, -2, 1ll << 40};
  std::vector<int32_t> i32 = {7, -8};
  std::vector<int16_t> i16 = {-3};
  std::vector<int8_t> i8 = {-1, 2, 3, 4};
  std::vector<uint8_t> u8 = {255, 0};
  std::vector<uint8_t> b = {1, 0, 1};
  std::vector<TensorToWrite> ts = {
      {"w.f32", DType::kF32, {2, 3}, f32.data(), f32.size() * 4},
      {"w.f16", DType::kF16, {3}, half.data(), 6},
      {"w.bf16", DType::kBF16, {1, 3}, half.data(), 6},
      {"w.i64", DType::kI64, {3}, i64.data(), 24},
      {"w.i32", DType::kI32, {2}, i32.data(), 8},
      {"w.i16", DType::kI16, {1}, i16.data(), 2},
      {"w.i8", DType::kI8, {2, 2}, i8.data(), 4},
      {"w.u8", DType::kU8, {2}, u8.data(), 2},
      {"w.bool", DType::kBool, {3}, b.data(), 3},
      {"empty", DType::kF32, {0, 4}, nullptr, 0},
  };
  const std::string path = dir.File("a.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, ts, {{"format", "pt"}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  ASSERT_EQ((*file)->tensors().size(), ts.size());
  for (const auto& t : ts) {
    auto v = (*file)->Get(t.name);
    ASSERT_TRUE(v.ok()) << t.name;
    EXPECT_EQ(v->info->dtype, t.dtype) << t.name;
    EXPECT_EQ(v->info->shape, t.shape) << t.name;
    ASSERT_EQ(v->info->nbytes(), t.nbytes) << t.name;
    if (t.nbytes) EXPECT_EQ(std::memcmp(v->data, t.data, t.nbytes), 0) << t.name;
  }
  // The data section is 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  float x[2] = {1, 2};
  auto s = WriteSafetensors(dir.File("b.safetensors"), {{"a", DType::kF32, {3}, x, 8}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'a'"), std::string::npos);
  s = WriteSafetensors(dir.File("b.safetensors"), {{"a", DType::kF32, {2}, x, 8}, {"a", DType::kF32, {2}, x, 8}});
  EXPECT_NE(s.message().find("duplicate"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir.File("b.safetensors")));
}

TEST(Safetensors, ReadsTinyQwen3Checkpoint) {
  auto ck = Checkpoint::Open(std::string(QATD_TEST_DATA) + "/golden/tiny-qwen3");
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->Names().size(), 24u);
  auto emb = ck->Get("model.embed_tokens.weight");
  ASSERT_TRUE(emb.ok());
  EXPECT_EQ(emb->info->dtype, DType::kBF16);
  EXPECT_EQ(emb->info->shape, (std::vector<int64_t>{151936, 64}));
  EXPECT_FALSE(ck->Has("lm_head.weight"));
  EXPECT_EQ(ck->Get("lm_head.weight").status().code(), absl::StatusCode::kNotFound);
}

TEST(Safetensors, ShardedCheckpointViaIndex) {
  TempDir dir;
  float a[2] = {1, 2}, b[3] = {3, 4, 5};
  ASSERT_TRUE(WriteSafetensors(dir.File("model-00001-of-00002.safetensors"), {{"x.a", DType::kF32, {2}, a, 8}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir.File("model-00002-of-00002.safetensors"), {{"x.b", DType::kF32, {3}, b, 12}}).ok());
  std::ofstream(dir.File("model.safetensors.index.json"))
      << R"({"metadata":{"total_size":20},"weight_map":{"x.a":"model-00001-of-00002.safetensors","x.b":"model-00002-of-00002.safetensors"}})";
  auto ck = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->Names(), (std::vector<std::string>{"x.a", "x.b"}));
  EXPECT_EQ(ck->files().size(), 2u);
  auto vb = ck->Get("x.b");
  ASSERT_TRUE(vb.ok());
  EXPECT_EQ(static_cast<const float*>(vb->data)[2], 5.0f);

  // An index that points at a tensor its shard does not hold is rejected.
  std::ofstream(dir.File("model.safetensors.index.json"))
      << R"({"weight_map":{"x.zzz":"model-00001-of-00002.safetensors"}})";
  auto bad = Checkpoint::Open(dir.path().string());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("x.zzz"), std::string::npos);
}

TEST(Safetensors, MissingFileIsNotFound) {
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent/x.safetensors").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Checkpoint::Open("/nonexistent/dir").status().code(), absl::StatusCode::kNotFound);
}

struct BadCase {
  const char* name;
  std::string image;
  const char* expect;  // substring of the error
};

TEST(Safetensors, RejectsMalformedFiles) {
  const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data8(8, '\x01');
  ASSERT_TRUE(ParseImage(Image(ok_header, data8)).ok());

  std::string absurd(8, '\xff');
  std::string truncated = Image(ok_header, data8).substr(0, 8 + ok_header.size() + 3);
  std::vector<BadCase> cases = {
      {"too short", std::string("\x05\x00", 2), "shorter than"},
      {"absurd header length", absurd + "{}", "exceeds the limit"},
      {"header past eof", Image(ok_header, data8).substr(0, 20), "past the end"},
      {"truncated data", truncated, "out of range"},
      {"not json", Image("{\"a\":", ""), "well-formed JSON"},
      {"json array", Image("[1,2]", ""), "not an object"},
      {"unknown dtype", Image(R"({"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "x"), "unknown dtype 'F8_E4M3'"},
      {"offsets out of range", Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", data8), "out of range"},
      {"end before begin", Image(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data8), "< begin"},
      {"size mismatch", Image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8), "does not match"},
      {"overlap",
       Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8),
       "overlap"},
      // Found with tests/fuzz/safetensors_fuzz.cc's invariants: an empty tensor between two
      // overlapping ones hid the overlap (only neighbours were compared).
      {"overlap behind an empty tensor",
       Image(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},)"
             R"("b":{"dtype":"U8","shape":[2],"data_offsets":[5,7]}})", data8),
       "tensors 'a' and 'b' overlap"},
      {"negative dim", Image(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8), "non-negative"},
      {"shape overflow",
       Image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", data8), "overflow"},
      // Found with the same fuzzer: 0 bytes, but 2^32 * 2^31 elements before the 0, so
      // TensorInfo::numel() overflowed int64 (UB) on a file the parser had accepted.
      {"element count overflow behind a 0",
       Image(R"({"t":{"dtype":"U8","shape":[4294967296,2147483648,0],"data_offsets":[0,0]}})", ""), "overflow"},
      {"missing offsets", Image(R"({"a":{"dtype":"F32","shape":[2]}})", data8), "data_offsets"},
      {"bad metadata", Image(R"({"__metadata__":{"k":1}})", ""), "__metadata__"},
  };
  for (const auto& c : cases) {
    absl::Status s = ParseImage(c.image);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << s;
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << c.name << ": " << s.message();
  }
}

TEST(Safetensors, TruncatedFileOnDiskNamesPath) {
  TempDir dir;
  float x[4] = {1, 2, 3, 4};
  const std::string path = dir.File("t.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"w", DType::kF32, {4}, x, 16}}).ok());
  fs::resize_file(path, fs::file_size(path) - 5);
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find(path), std::string::npos);
  EXPECT_NE(f.status().message().find("'w'"), std::string::npos);
}

// Cheap deterministic fuzzing of the parser: random mutations of a valid image must never
// crash (ASan build checks for out-of-bounds reads).
TEST(Safetensors, MutatedImagesNeverCrash) {
  const std::string base = Image(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I8","shape":[2,2],"data_offsets":[8,12]}})",
      std::string(12, '\x02'));
  uint32_t rng = 12345;
  auto next = [&] { return rng = rng * 1664525u + 1013904223u; };
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string img = base;
    int edits = 1 + next() % 4;
    for (int e = 0; e < edits; ++e) {
      size_t pos = next() % img.size();
      switch (next() % 3) {
        case 0: img[pos] = static_cast<char>(next()); break;
        case 1: img.erase(pos, 1 + next() % 3); break;
        default: img.insert(pos, 1, "0123456789[]{},\":"[next() % 17]); break;
      }
      if (img.empty()) img = "x";
    }
    auto f = SafetensorsFile::FromBuffer(img.data(), img.size());
    if (f.ok()) {
      ++accepted;
      for (const auto& t : (*f)->tensors()) {
        // Touch every byte of every accepted tensor: out-of-range views would trip ASan.
        const uint8_t* p = (*f)->DataOf(t);
        volatile uint8_t sink = 0;
        for (uint64_t k = 0; k < t.nbytes(); ++k) sink = sink ^ p[k];
        (void)sink;
      }
    }
  }
  EXPECT_LT(accepted, 3000);  // mutations are mostly caught
}

}  // namespace
}  // namespace qatd::model

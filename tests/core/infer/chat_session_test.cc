// ChatSession (core/infer/chat_session.h) on tiny-qwen3: each turn generates from the whole
// conversation, /reset starts over, and a conversation longer than the model's positions
// forgets its oldest exchanges.
#include "core/infer/chat_session.h"

#include <string>
#include <vector>

#include "core/model/model_io.h"
#include "gtest/gtest.h"

namespace qatd::infer {
namespace {

const std::string kTiny = std::string(QATD_TEST_DATA) + "/golden/tiny-qwen3";
const std::string kTokenizer = std::string(QATD_TEST_DATA) + "/golden/qwen3-tokenizer";

struct Loaded {
  model::Qwen3Model model{nullptr};
  model::Tokenizer tokenizer;
};

const Loaded& Tiny() {
  static Loaded* loaded = [] {
    auto model = model::LoadQwen3(kTiny, model::LoadOptions{at::kFloat, at::kCPU});
    EXPECT_TRUE(model.ok()) << model.status();
    auto tok = model::Tokenizer::FromFile(kTokenizer);
    EXPECT_TRUE(tok.ok()) << tok.status();
    return new Loaded{model->model, *std::move(tok)};
  }();
  return *loaded;
}

ChatSession NewSession(int64_t max_new_tokens = 4) {
  GenerationOptions go;
  go.max_new_tokens = max_new_tokens;
  return ChatSession(Tiny().model, &Tiny().tokenizer, ChatHistory({"Be brief.", true, false}), go);
}

TEST(ChatSession, TheSecondTurnGeneratesFromTheFirstExchange) {
  ChatSession chat = NewSession();
  std::string streamed;
  absl::StatusOr<TurnResult> first = chat.Turn("please tell me a long story about a cat and a dog",
                                               [&](const std::string& piece, int32_t) {
                                                 streamed += piece;
                                                 return true;
                                               });
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(streamed, first->text);
  EXPECT_GT(first->generated_tokens, 0);
  EXPECT_EQ(chat.history().exchanges(), 1u);

  absl::StatusOr<TurnResult> second = chat.Turn("hi", nullptr);
  ASSERT_TRUE(second.ok()) << second.status();
  // "hi" alone renders far fewer tokens than the first message: only the history explains more.
  ChatSession fresh = NewSession();
  absl::StatusOr<TurnResult> alone = fresh.Turn("hi", nullptr);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_GT(second->prompt_tokens, first->prompt_tokens);
  EXPECT_GT(second->prompt_tokens, alone->prompt_tokens + first->generated_tokens);
  EXPECT_EQ(chat.history().exchanges(), 2u);

  chat.history().Reset();
  absl::StatusOr<TurnResult> after_reset = chat.Turn("hi", nullptr);
  ASSERT_TRUE(after_reset.ok()) << after_reset.status();
  EXPECT_EQ(after_reset->prompt_tokens, alone->prompt_tokens);
}

TEST(ChatSession, StoppingEarlyDoesNotRecordTheExchange) {
  ChatSession chat = NewSession();
  absl::StatusOr<TurnResult> r = chat.Turn("hello there", [](const std::string&, int32_t) { return false; });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stop_reason, StopReason::kCallback);
  EXPECT_EQ(chat.history().exchanges(), 0u);
}

TEST(ChatSession, ALongConversationForgetsItsOldestExchangesToFitThePositions) {
  const int64_t positions = Tiny().model->config().max_position_embeddings;
  ASSERT_GT(positions, 0);
  ChatSession chat = NewSession();
  // Each exchange takes a good share of the positions: a few of them overflow.
  std::string words;
  while (static_cast<int64_t>(Tiny().tokenizer.Encode(words).size()) < positions / 3) words += " cat";
  int64_t dropped = 0;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<TurnResult> r = chat.Turn(words, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LE(r->prompt_tokens + 4, positions);
    dropped += r->dropped_exchanges;
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(chat.history().exchanges(), 4u);

  // A message that does not fit even alone is refused, naming the sizes.
  std::string huge;
  while (static_cast<int64_t>(Tiny().tokenizer.Encode(huge).size()) < positions) huge += " cat";
  absl::StatusOr<TurnResult> refused = chat.Turn(huge, nullptr);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qatd::infer

// ChatHistory (core/infer/chat_history.h): what a chat session's next prompt holds after
// exchanges, /reset, /system and dropping the oldest exchange.
#include "core/infer/chat_history.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qatd::infer {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Prompt(const ChatHistory& h, const std::string& user) {
  absl::StatusOr<std::string> p = h.PromptFor(user);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.value_or("");
}

TEST(ChatHistory, FirstPromptIsSystemThenUserThenTheAssistantHeader) {
  ChatHistory h({"Be brief.", true, true});
  EXPECT_EQ(Prompt(h, "hi"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatHistory, LaterPromptsCarryEveryExchangeInOrder) {
  ChatHistory h({"", true, false});
  h.AddExchange("what is 2+2?", "4");
  h.AddExchange("and 3+3?", "6");
  const std::string p = Prompt(h, "and 4+4?");
  EXPECT_EQ(h.exchanges(), 2u);
  EXPECT_THAT(p, Not(HasSubstr("system")));
  const size_t first = p.find("<|im_start|>user\nwhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>");
  const size_t second = p.find("<|im_start|>user\nand 3+3?<|im_end|>\n<|im_start|>assistant\n6<|im_end|>");
  const size_t last = p.find("<|im_start|>user\nand 4+4?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  ASSERT_NE(first, std::string::npos) << p;
  ASSERT_NE(second, std::string::npos) << p;
  ASSERT_NE(last, std::string::npos) << p;
  EXPECT_LT(first, second);
  EXPECT_LT(second, last);
}

TEST(ChatHistory, EarlierAnswersLoseTheirReasoningAsInTheHubTemplate) {
  ChatHistory h({"", true, true});
  h.AddExchange("q1", "<think>\nsecret steps\n</think>\n\nanswer one");
  const std::string p = Prompt(h, "q2");
  EXPECT_THAT(p, HasSubstr("answer one"));
  EXPECT_THAT(p, Not(HasSubstr("secret steps")));
}

TEST(ChatHistory, ResetForgetsTheExchangesButKeepsTheSystemPrompt) {
  ChatHistory h({"Be brief.", true, true});
  const std::string fresh = Prompt(h, "hi");
  h.AddExchange("what is 2+2?", "4");
  EXPECT_NE(Prompt(h, "hi"), fresh);
  h.Reset();
  EXPECT_EQ(h.exchanges(), 0u);
  EXPECT_EQ(Prompt(h, "hi"), fresh);
}

TEST(ChatHistory, SetSystemPromptReplacesItAndForgetsTheExchanges) {
  ChatHistory h({"Be brief.", true, true});
  h.AddExchange("what is 2+2?", "4");
  h.SetSystemPrompt("You are a pirate.");
  EXPECT_EQ(h.exchanges(), 0u);
  EXPECT_EQ(h.system_prompt(), "You are a pirate.");
  const std::string p = Prompt(h, "hi");
  EXPECT_THAT(p, HasSubstr("<|im_start|>system\nYou are a pirate.<|im_end|>"));
  EXPECT_THAT(p, Not(HasSubstr("Be brief.")));
  EXPECT_THAT(p, Not(HasSubstr("2+2")));
  h.SetSystemPrompt("");
  EXPECT_THAT(Prompt(h, "hi"), Not(HasSubstr("system")));
}

TEST(ChatHistory, DropOldestForgetsTheFirstExchangeOnly) {
  ChatHistory h({"", true, true});
  EXPECT_FALSE(h.DropOldest());
  h.AddExchange("first question", "first answer");
  h.AddExchange("second question", "second answer");
  EXPECT_TRUE(h.DropOldest());
  const std::string p = Prompt(h, "third");
  EXPECT_THAT(p, Not(HasSubstr("first")));
  EXPECT_THAT(p, HasSubstr("second answer"));
}

TEST(ChatHistory, WithoutTheTemplateThePromptIsTheTextsConcatenated) {
  ChatHistory h({"ignored without roles", false, true});
  h.AddExchange("Once upon", " a time");
  EXPECT_EQ(Prompt(h, " there was"), "Once upon a time there was");
}

}  // namespace
}  // namespace qatd::infer

// Tests of the Qwen3 chat template against the Hugging Face golden renderings
// (tests/data/golden/chat_template_cases.jsonl) and the template's documented branches.

#include "core/model/chat_template.h"

#include <fstream>
#include <string>
#include <vector>

#include "core/model/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qatd::model {
namespace {

using Json = nlohmann::json;

const std::string kGoldenDir = std::string(QATD_TEST_DATA) + "/golden";

std::string Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt = false,
                   bool enable_thinking = true) {
  absl::StatusOr<std::string> text =
      RenderChat(messages, ChatOptions{add_generation_prompt, enable_thinking});
  EXPECT_TRUE(text.ok()) << text.status();
  return text.value_or("");
}

TEST(ChatTemplateGoldenTest, EveryGoldenCaseRendersAndTokenizesExactly) {
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromFile(kGoldenDir + "/qwen3-tokenizer");
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::ifstream in(kGoldenDir + "/chat_template_cases.jsonl");
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const Json c = Json::parse(line);
    SCOPED_TRACE(c["id"].get<std::string>());
    absl::StatusOr<std::vector<ChatMessage>> messages =
        ParseChatMessagesJson(c["messages"].dump());
    ASSERT_TRUE(messages.ok()) << messages.status();
    absl::StatusOr<std::string> text =
        RenderChat(*messages, ChatOptions{c["add_generation_prompt"].get<bool>(),
                                          c["enable_thinking"].get<bool>()});
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, c["text"].get<std::string>());
    EXPECT_EQ(tok->Encode(*text), c["ids"].get<std::vector<int32_t>>());
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

TEST(ChatTemplateTest, FinalAssistantTurnAlwaysGetsAThinkBlock) {
  EXPECT_EQ(Render({{"user", "hi"}, {"assistant", "hello"}}),
            "<|im_start|>user\nhi<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\nhello<|im_end|>\n");
}

TEST(ChatTemplateTest, AssistantTurnsAfterLastQueryKeepNonEmptyReasoning) {
  // Two assistant turns after the last user turn: the first keeps its reasoning, a
  // non-final one without reasoning renders plainly.
  EXPECT_EQ(Render({{"user", "q"},
                    {"assistant", "<think>\nr1\n</think>\n\na1"},
                    {"assistant", "a2"},
                    {"assistant", "\n\na3"}}),
            "<|im_start|>user\nq<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr1\n</think>\n\na1<|im_end|>\n"
            "<|im_start|>assistant\na2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\na3<|im_end|>\n");
}

TEST(ChatTemplateTest, ReasoningIsParsedLikeThePythonSplits) {
  // Text before <think> is dropped; newlines around reasoning and answer are trimmed.
  EXPECT_EQ(Render({{"user", "q"}, {"assistant", "pre<think>\n\nA\n\n</think>\n\n\nB"}}),
            "<|im_start|>user\nq<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nA\n</think>\n\nB<|im_end|>\n");
  // Before the last query the reasoning is removed, and the answer's leading newlines too.
  EXPECT_EQ(Render({{"user", "q"}, {"assistant", "<think>x</think>\n\nA"}, {"user", "q2"}}),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
            "<|im_start|>user\nq2<|im_end|>\n");
}

TEST(ChatTemplateTest, ExplicitReasoningContentLeavesContentUntouched) {
  ChatMessage assistant{"assistant", "answer", std::string("\nthought\n")};
  EXPECT_EQ(Render({{"user", "q"}, assistant}),
            "<|im_start|>user\nq<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nthought\n</think>\n\nanswer<|im_end|>\n");
}

TEST(ChatTemplateTest, SystemTurnsAndGenerationPrompt) {
  EXPECT_EQ(Render({{"system", "S"}, {"user", "u"}, {"system", "S2"}}, true, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n"
            "<|im_start|>system\nS2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(Render({{"user", "u"}}, true, true),
            "<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, ToolResponsesDoNotCountAsQueries) {
  // A user turn that is a wrapped tool response is not the "last query": the assistant turn
  // before it is after the real last query and keeps its reasoning.
  EXPECT_EQ(Render({{"user", "q"},
                    {"assistant", "<think>r</think>a"},
                    {"user", "<tool_response>x</tool_response>"}}),
            "<|im_start|>user\nq<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr\n</think>\n\na<|im_end|>\n"
            "<|im_start|>user\n<tool_response>x</tool_response><|im_end|>\n");
}

TEST(ChatTemplateTest, RejectsUnsupportedInput) {
  EXPECT_EQ(RenderChat({}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> tool = RenderChat({{"user", "q"}, {"tool", "42"}}, {});
  EXPECT_EQ(tool.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(tool.status().message().find("messages[1]"), std::string::npos);
  absl::StatusOr<std::string> odd = RenderChat({{"developer", "x"}}, {});
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(odd.status().message().find("developer"), std::string::npos);
}

TEST(ChatMessagesJsonTest, ParsesAndNamesBadElements) {
  absl::StatusOr<std::vector<ChatMessage>> ok = ParseChatMessagesJson(
      R"([{"role": "user", "content": "hi", "name": "ignored"},
          {"role": "assistant", "content": "a", "reasoning_content": "r"}])");
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[0].role, "user");
  EXPECT_EQ((*ok)[0].content, "hi");
  EXPECT_FALSE((*ok)[0].reasoning_content.has_value());
  EXPECT_EQ((*ok)[1].reasoning_content, "r");

  struct Case {
    std::string json;
    absl::StatusCode code;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {"[", absl::StatusCode::kInvalidArgument, "not valid JSON"},
      {R"({"role": "user"})", absl::StatusCode::kInvalidArgument, "expected a JSON array"},
      {R"([{"role": "user", "content": "x"}, 3])", absl::StatusCode::kInvalidArgument,
       "messages[1]: expected an object"},
      {R"([{"content": "x"}])", absl::StatusCode::kInvalidArgument,
       "messages[0]: missing field 'role'"},
      {R"([{"role": "user", "content": ["x"]}])", absl::StatusCode::kInvalidArgument,
       "messages[0].content: expected a string"},
      {R"([{"role": "assistant", "content": "", "tool_calls": []}])",
       absl::StatusCode::kUnimplemented, "messages[0].tool_calls"},
      {R"([{"role": "assistant", "content": "", "reasoning_content": 1}])",
       absl::StatusCode::kInvalidArgument, "messages[0].reasoning_content"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    absl::StatusOr<std::vector<ChatMessage>> r = ParseChatMessagesJson(c.json);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), c.code);
    EXPECT_NE(r.status().message().find(c.message_part), std::string::npos) << r.status();
  }
}

}  // namespace
}  // namespace qatd::model

#include "common/json_nesting.h"

#include <gtest/gtest.h>

#include <string>

#include "nlohmann/json.hpp"

namespace quantserve::common {
namespace {

std::string Nested(int depth, char open, char close) {
  return std::string(depth, open) + std::string(depth, close);
}

TEST(JsonNestingTest, CountsArraysAndObjectsAsNlohmannNestsThem) {
  EXPECT_EQ(JsonNesting(""), 0);
  EXPECT_EQ(JsonNesting("3"), 0);
  EXPECT_EQ(JsonNesting("{}"), 1);
  EXPECT_EQ(JsonNesting(R"({"a": [1, {"b": []}], "c": {}})"), 4);
  // Brackets inside strings, escaped quotes and backslashes included, do not count.
  EXPECT_EQ(JsonNesting(R"({"a": "[[[{{{", "b\"[": "\\", "c": ["]]]"]})"), 2);
  // Unbalanced garbage gives a count, never a crash.
  EXPECT_EQ(JsonNesting("]]]}}{"), 1);
  EXPECT_EQ(JsonNesting("\"unterminated [[["), 0);
  // The same depth nlohmann sees, on a mix of both kinds.
  std::string mixed;
  for (int i = 0; i < 30; ++i) mixed += i % 2 ? "[" : "{\"k\":";
  mixed += "1";
  for (int i = 29; i >= 0; --i) mixed += i % 2 ? "]" : "}";
  ASSERT_FALSE(nlohmann::json::parse(mixed, nullptr, false).is_discarded());
  EXPECT_EQ(JsonNesting(mixed), 30);
}

TEST(JsonNestingTest, RefusesDeepTextBeforeAnyoneCopiesIt) {
  EXPECT_TRUE(CheckJsonNesting("config.json", Nested(kMaxJsonNesting, '[', ']')).ok());
  // 100k levels: what one LoadModel request sent to crash the server (nlohmann parses it,
  // then copying or dumping the value recurses once per level).
  const absl::Status s = CheckJsonNesting("quantization_config", Nested(100000, '{', '}'));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "quantization_config: JSON nests 100000 levels deep (at most 64)");
  EXPECT_EQ(CheckJsonNesting("x", Nested(3, '[', ']'), /*max_depth=*/2).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantserve::common

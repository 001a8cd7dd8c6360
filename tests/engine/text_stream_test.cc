#include "engine/text_stream.h"

#include <gtest/gtest.h>

namespace quantserve::engine {
namespace {

std::string PushAll(TextStream& s, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += s.Push(p);
  return out;
}

TEST(TextStreamTest, PassesAsciiThrough) {
  TextStream s({});
  EXPECT_EQ(s.Push("Hello"), "Hello");
  EXPECT_EQ(s.Push(", world"), ", world");
  EXPECT_EQ(s.Flush(), "");
}

TEST(TextStreamTest, HoldsSplitMultibyteCharacter) {
  TextStream s({});
  // "é" = C3 A9 split over two tokens.
  EXPECT_EQ(s.Push("caf\xC3"), "caf");
  EXPECT_EQ(s.Push("\xA9!"), "\xC3\xA9!");
}

TEST(TextStreamTest, EmojiSplitOverFourTokens) {
  TextStream s({});
  std::string emoji = "\xF0\x9F\x98\x80";
  EXPECT_EQ(s.Push(emoji.substr(0, 1)), "");
  EXPECT_EQ(s.Push(emoji.substr(1, 1)), "");
  EXPECT_EQ(s.Push(emoji.substr(2, 1)), "");
  EXPECT_EQ(s.Push(emoji.substr(3, 1)), emoji);
}

TEST(TextStreamTest, InvalidBytesBecomeReplacementCharacter) {
  TextStream s({});
  EXPECT_EQ(s.Push("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  // A lead byte followed by a non-continuation byte.
  EXPECT_EQ(s.Push("\xC3(") , "\xEF\xBF\xBD(");
}

TEST(TextStreamTest, IncompleteTailIsReplacedOnFlush) {
  TextStream s({});
  EXPECT_EQ(s.Push("x\xE2\x82"), "x");
  EXPECT_EQ(s.Flush(), "\xEF\xBF\xBD");
}

TEST(TextStreamTest, StopStringWithinOneToken) {
  TextStream s({"END"});
  EXPECT_EQ(s.Push("abcENDdef"), "abc");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.Push("more"), "");
  EXPECT_EQ(s.Flush(), "");
}

TEST(TextStreamTest, StopStringAcrossTokensIsHeldBack) {
  TextStream s({"\n\n"});
  EXPECT_EQ(s.Push("line one\n"), "line one");  // "\n" might begin the stop string
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.Push("\nnext"), "");
  EXPECT_TRUE(s.stopped());
}

TEST(TextStreamTest, HeldPrefixIsReleasedWhenItDiverges) {
  TextStream s({"STOP"});
  EXPECT_EQ(s.Push("ST"), "");
  EXPECT_EQ(s.Push("ART"), "START");
  EXPECT_FALSE(s.stopped());
}

TEST(TextStreamTest, EarliestOfSeveralStopStringsWins) {
  TextStream s({"world", "lo"});
  EXPECT_EQ(PushAll(s, {"hello world"}), "hel");
  EXPECT_TRUE(s.stopped());
}

TEST(TextStreamTest, HeldTextIsFlushedAtTheEnd) {
  TextStream s({"STOP"});
  EXPECT_EQ(s.Push("the end ST"), "the end ");
  EXPECT_EQ(s.Flush(), "ST");
}

}  // namespace
}  // namespace quantserve::engine

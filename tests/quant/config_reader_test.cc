#include "quant/config_reader.h"

#include <gtest/gtest.h>

namespace quantserve::quant {
namespace {

ConfigReader Read(const std::string& text) {
  auto r = ConfigReader::Parse(text);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

TEST(ConfigReaderTest, NotAnObjectIsInvalidArgument) {
  EXPECT_EQ(ConfigReader::Parse("[1]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConfigReader::Parse("{").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigReaderTest, AbsentAndNullKeepTheDefault) {
  ConfigReader r = Read(R"({"a": null})");
  bool b = true;
  int64_t i = 7;
  std::string s = "x";
  EXPECT_TRUE(r.Bool("a", &b).ok());
  EXPECT_TRUE(r.Int("missing", &i).ok());
  EXPECT_TRUE(r.String("a", &s).ok());
  EXPECT_TRUE(b);
  EXPECT_EQ(i, 7);
  EXPECT_EQ(s, "x");
}

TEST(ConfigReaderTest, BoolRefusesNumbersAndStrings) {
  bool b = false;
  absl::Status s = Read(R"({"load_in_4bit": 1})").Bool("load_in_4bit", &b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "quantization_config.load_in_4bit must be true or false (got 1)");
  EXPECT_FALSE(Read(R"({"x": "true"})").Bool("x", &b).ok());
  EXPECT_TRUE(Read(R"({"x": true})").Bool("x", &b).ok());
  EXPECT_TRUE(b);
}

TEST(ConfigReaderTest, NumberCanRequireAFloatLikePython) {
  double d = 0;
  EXPECT_TRUE(Read(R"({"t": 6})").Number("t", &d).ok());
  EXPECT_EQ(d, 6.0);
  absl::Status s = Read(R"({"t": 6})").Number("t", &d, /*require_float=*/true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("must be a float"), absl::string_view::npos) << s;
  EXPECT_TRUE(Read(R"({"t": 5.5})").Number("t", &d, true).ok());
  EXPECT_EQ(d, 5.5);
}

TEST(ConfigReaderTest, IntRefusesFloats) {
  int64_t i = 0;
  EXPECT_FALSE(Read(R"({"bits": 4.0})").Int("bits", &i).ok());
  EXPECT_TRUE(Read(R"({"bits": -1})").Int("bits", &i).ok());
  EXPECT_EQ(i, -1);
}

TEST(ConfigReaderTest, EnumListsTheAllowedValues) {
  std::string v = "fp4";
  absl::Status s = Read(R"({"q": "nf5"})").Enum("q", &v, {"fp4", "nf4"});
  EXPECT_EQ(s.message(), "quantization_config.q must be one of \"fp4\", \"nf4\" (got \"nf5\")");
  EXPECT_EQ(v, "fp4");
  EXPECT_TRUE(Read(R"({"q": "GEMM"})").Enum("q", &v, {"gemm", "gemv"}, /*lower=*/true).ok());
  EXPECT_EQ(v, "gemm");
  EXPECT_FALSE(Read(R"({"q": "GEMM"})").Enum("q", &v, {"gemm"}).ok());
}

TEST(ConfigReaderTest, StringList) {
  std::optional<std::vector<std::string>> list;
  EXPECT_TRUE(Read(R"({"m": ["lm_head", "mlp"]})").StringList("m", &list).ok());
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(list->size(), 2u);
  EXPECT_FALSE(Read(R"({"m": "lm_head"})").StringList("m", &list).ok());
  EXPECT_FALSE(Read(R"({"m": [1]})").StringList("m", &list).ok());
}

}  // namespace
}  // namespace quantserve::quant

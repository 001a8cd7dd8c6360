#include "cli/command_line.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quantserve::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::vector<FlagSpec> kSpecs = {
    {.name = "server", .value_name = "HOST:PORT", .help = "where"},
    {.name = "json", .value_name = "", .help = "json"},
    {.name = "stop", .value_name = "TEXT", .help = "stop", .repeatable = true},
    {.name = "max_new_tokens", .value_name = "N", .help = "n", .default_text = "64"},
    {.name = "temperature", .value_name = "T", .help = "t"},
};

TEST(CommandLineTest, ParsesFlagsAnywhereAndKeepsPositionals) {
  auto parsed = CommandLine::Parse(
      {"--server=h:1", "generate", "m", "--json", "--stop", "a", "hello", "--stop=b",
       "--max_new_tokens", "8", "--temperature=-0.5", "--", "--not-a-flag"},
      kSpecs);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->positional(), ElementsAre("generate", "m", "hello", "--not-a-flag"));
  EXPECT_EQ(parsed->GetString("server"), "h:1");
  EXPECT_TRUE(parsed->GetBool("json"));
  EXPECT_THAT(parsed->GetAll("stop"), ElementsAre("a", "b"));
  EXPECT_EQ(parsed->GetInt("max_new_tokens")->value(), 8);
  EXPECT_DOUBLE_EQ(parsed->GetDouble("temperature")->value(), -0.5);
  EXPECT_FALSE(parsed->GetInt("missing")->has_value());
  EXPECT_FALSE(parsed->help());
}

TEST(CommandLineTest, UsageErrors) {
  EXPECT_THAT(std::string(CommandLine::Parse({"--bogus"}, kSpecs).status().message()),
              HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(std::string(CommandLine::Parse({"--server"}, kSpecs).status().message()),
              HasSubstr("needs a value"));
  EXPECT_THAT(
      std::string(CommandLine::Parse({"--server=a", "--server=b"}, kSpecs).status().message()),
      HasSubstr("more than once"));
  EXPECT_THAT(std::string(CommandLine::Parse({"--json=yes"}, kSpecs).status().message()),
              HasSubstr("switch"));
  auto parsed = CommandLine::Parse({"--max_new_tokens=many"}, kSpecs);
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(std::string(parsed->GetInt("max_new_tokens").status().message()),
              HasSubstr("--max_new_tokens must be an integer"));
}

TEST(CommandLineTest, HelpAndBooleanFalse) {
  auto parsed = CommandLine::Parse({"list", "-h", "--json=false"}, kSpecs);
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->help());
  EXPECT_TRUE(parsed->Has("json"));
  EXPECT_FALSE(parsed->GetBool("json"));
}

TEST(CommandLineTest, FlagsHelpAlignsAndShowsDefaults) {
  std::string help = FlagsHelp(kSpecs);
  EXPECT_THAT(help, HasSubstr("--max_new_tokens=N"));
  EXPECT_THAT(help, HasSubstr("(default: 64)"));
  EXPECT_THAT(help, HasSubstr("(repeatable)"));
}

}  // namespace
}  // namespace quantserve::cli

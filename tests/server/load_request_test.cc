#include "server/load_request.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include "absl/strings/str_cat.h"
#include "server/routes.h"

namespace quantserve::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ValidateModelNameTest, AcceptsPlainNamesAndRefusesOthers) {
  EXPECT_TRUE(ValidateModelName("tiny-llama_v1.2").ok());
  EXPECT_THAT(std::string(ValidateModelName("").message()), StartsWith("name: required"));
  EXPECT_EQ(ValidateModelName("a/b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateModelName("a b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateModelName(std::string(kMaxModelNameLength + 1, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ValidateModelName("", "model").message()), StartsWith("model: "));
}

TEST(ValidateLoadRequestTest, NamesTheBadField) {
  LoadRequest ok{.name = "m", .path = "p"};
  EXPECT_TRUE(ValidateLoadRequest(ok).ok());

  struct Case {
    LoadRequest request;
    std::string field;
  };
  const Case kCases[] = {
      {{.name = "", .path = "p"}, "name: "},
      {{.name = "m", .path = ""}, "path: "},
      {{.name = "m", .path = "p", .quantization_config_json = "{nope"}, "quantization_config: "},
      {{.name = "m", .path = "p", .quantization_config_json = "[1]"}, "quantization_config: "},
      {{.name = "m", .path = "p", .dtype = "int3"}, "dtype: "},
      {{.name = "m", .path = "p", .device_map = "tpu"}, "device_map: "},
      {{.name = "m", .path = "p", .device_map = "cuda:x"}, "device_map: "},
      {{.name = "m", .path = "p", .device_map = "{bad"}, "device_map: "},
      {{.name = "m", .path = "p", .max_memory_json = "3"}, "max_memory: "},
      {{.name = "m", .path = "p", .num_threads = -1}, "num_threads: "},
      {{.name = "m", .path = "p", .kernel_activations = "int4"}, "kernel_activations: "},
      {{.name = "m", .path = "p", .kernel_activations = "INT8"}, "kernel_activations: "},
      // One request nesting 100k levels used to crash the server (copying the parsed value
      // recursed once per level).
      {{.name = "m",
        .path = "p",
        .quantization_config_json = std::string(100000, '{') + std::string(100000, '}')},
       "quantization_config: JSON nests 100000 levels deep"},
      {{.name = "m", .path = "p", .device_map = std::string(100, '{') + std::string(100, '}')},
       "device_map: JSON nests"},
      {{.name = "m", .path = "p", .max_memory_json = std::string(65, '[') + std::string(65, ']')},
       "max_memory: JSON nests"},
  };
  for (const Case& c : kCases) {
    absl::Status s = ValidateLoadRequest(c.request);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(s.message()), StartsWith(c.field));
  }
  EXPECT_TRUE(ValidateLoadRequest({.name = "m", .path = "p", .device_map = "cuda:1"}).ok());
  EXPECT_TRUE(ValidateLoadRequest({.name = "m", .path = "p", .kernel_activations = "int8"}).ok());
  EXPECT_TRUE(ValidateLoadRequest({.name = "m", .path = "p", .kernel_activations = "int16"}).ok());
  EXPECT_TRUE(
      ValidateLoadRequest({.name = "m", .path = "p", .device_map = "{\"model\": \"cpu\"}"}).ok());
}

TEST(RequestedQuantMethodTest, ReadsTheField) {
  EXPECT_EQ(RequestedQuantMethod(R"({"quant_method": "hqq", "nbits": 4})"), "hqq");
  EXPECT_EQ(RequestedQuantMethod(""), "");
  EXPECT_EQ(RequestedQuantMethod("{broken"), "");
  EXPECT_EQ(RequestedQuantMethod(R"({"bits": 4})"), "");
}

class ResolveModelPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ =
        fs::path(::testing::TempDir()) /
        ("resolve_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(base_);
    root_ = base_ / "root";
    fs::create_directories(root_ / "tiny");
    fs::create_directories(root_ / "org" / "model");
    fs::create_directories(base_ / "outside");
    std::ofstream(root_ / "file.txt") << "x";
    fs::create_directory_symlink(base_ / "outside", root_ / "escape");
    root_ = fs::canonical(root_);
  }
  void TearDown() override { fs::remove_all(base_); }

  fs::path base_;
  fs::path root_;
};

TEST_F(ResolveModelPathTest, ResolvesInsideTheRoot) {
  auto resolved = ResolveModelPath(root_.string(), "tiny");
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(*resolved, (root_ / "tiny").string());
  EXPECT_TRUE(ResolveModelPath(root_.string(), "org/model").ok());
  EXPECT_TRUE(ResolveModelPath(root_.string(), "./tiny/").ok());
  // HF cache layouts: a symlink that stays inside the root is followed.
  fs::create_directory_symlink(root_ / "tiny", root_ / "org" / "link");
  auto linked = ResolveModelPath(root_.string(), "org/link");
  ASSERT_TRUE(linked.ok()) << linked.status();
  EXPECT_EQ(*linked, (root_ / "tiny").string());
}

// NUL bytes (the OS would load the path cut at the NUL), control characters and absolute
// paths are refused before the file system is asked, for loads and saves alike.
TEST_F(ResolveModelPathTest, RefusesNulControlAndAbsolutePaths) {
  const std::string nul("tiny\0../../etc", 15);
  for (const std::string& path : {nul, std::string("tiny\n"), std::string("/etc"),
                                  (root_ / "tiny").string()}) {
    for (bool save : {false, true}) {
      absl::StatusOr<std::string> r = save ? ResolveNewModelPath(root_.string(), path)
                                           : ResolveModelPath(root_.string(), path);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << path << " save=" << save;
      EXPECT_THAT(std::string(r.status().message()), StartsWith("path: ")) << path;
    }
  }
  EXPECT_THAT(std::string(ResolveModelPath(root_.string(), nul).status().message()),
              HasSubstr("NUL"));
  EXPECT_THAT(std::string(ResolveModelPath(root_.string(), "/etc").status().message()),
              HasSubstr("absolute"));
}

// --allow_symlinks_outside_root lets a load follow a symlink to a store elsewhere; '..' and
// absolute paths stay refused, and saves never follow it.
TEST_F(ResolveModelPathTest, OutsideSymlinksOnlyWhenAllowed) {
  EXPECT_EQ(ResolveModelPath(root_.string(), "escape").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto allowed = ResolveModelPath(root_.string(), "escape", /*allow_symlinks_outside_root=*/true);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ(*allowed, fs::canonical(base_ / "outside").string());
  EXPECT_EQ(ResolveModelPath(root_.string(), "../outside", true).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveNewModelPath(root_.string(), "escape/new").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ResolveModelPathTest, RefusesEscapes) {
  for (const std::string& path :
       {std::string("../outside"), std::string("tiny/../../outside"), std::string("/etc"),
        (base_ / "outside").string(), std::string("escape")}) {
    absl::StatusOr<std::string> resolved = ResolveModelPath(root_.string(), path);
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument) << path;
    EXPECT_THAT(std::string(resolved.status().message()), StartsWith("path: ")) << path;
  }
}

TEST_F(ResolveModelPathTest, MissingIsNotFoundAndFilesAreRefused) {
  EXPECT_EQ(ResolveModelPath(root_.string(), "nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolveModelPath(root_.string(), "file.txt").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveModelPath(root_.string(), "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ParseStartupConfigTest, ParsesObjectsAndStrings) {
  auto parsed = ParseStartupConfig(R"({"models": [
      {"name": "a", "path": "tiny", "quantization_config": {"quant_method": "eetq"},
       "dtype": "float16", "device_map": "cpu", "num_threads": 2, "kernel_activations": "int8"},
      {"name": "b", "path": "tiny", "quantization_config": "{\"quant_method\": \"hqq\"}",
       "device_map": {"model": "cpu"}, "max_memory": {"cpu": "1GiB"}}]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].name, "a");
  EXPECT_EQ(RequestedQuantMethod((*parsed)[0].quantization_config_json), "eetq");
  EXPECT_EQ((*parsed)[0].dtype, "float16");
  EXPECT_EQ((*parsed)[0].num_threads, 2);
  EXPECT_EQ((*parsed)[0].kernel_activations, "int8");
  EXPECT_EQ((*parsed)[1].kernel_activations, "");
  EXPECT_EQ(RequestedQuantMethod((*parsed)[1].quantization_config_json), "hqq");
  EXPECT_THAT((*parsed)[1].device_map, HasSubstr("\"model\""));
  EXPECT_THAT((*parsed)[1].max_memory_json, HasSubstr("1GiB"));
  EXPECT_TRUE(ParseStartupConfig("{}")->empty());
}

TEST(ParseStartupConfigTest, CalibrationTextsAreAListOfStrings) {
  auto parsed = ParseStartupConfig(R"({"models": [
      {"name": "a", "path": "tiny", "quantization_config": {"quant_method": "quanto",
       "activations": "int8"}, "calibration_texts": ["In the beginning", "And God said"]}]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ((*parsed)[0].calibration_texts,
            (std::vector<std::string>{"In the beginning", "And God said"}));
  for (const char* bad : {R"("text")", R"(["a", 1])"}) {
    auto status = ParseStartupConfig(
        absl::StrCat(R"({"models": [{"name": "a", "path": "x", "calibration_texts": )", bad,
                     "}]}"));
    EXPECT_THAT(std::string(status.status().message()),
                HasSubstr("models[0].calibration_texts: must be an array of strings"))
        << bad;
  }
}

TEST(ParseStartupConfigTest, ErrorsNameTheEntryAndField) {
  EXPECT_THAT(std::string(ParseStartupConfig("nope").status().message()),
              HasSubstr("not valid JSON"));
  EXPECT_EQ(ParseStartupConfig(std::string(100000, '[') + std::string(100000, ']'))
                .status()
                .message(),
            "startup config: JSON nests 100000 levels deep (at most 64)");
  EXPECT_THAT(std::string(ParseStartupConfig(R"({"models": [{"path": "x"}]})").status().message()),
              HasSubstr("models[0].name"));
  EXPECT_THAT(
      std::string(
          ParseStartupConfig(R"({"models": [{"name": "a", "path": 3}]})").status().message()),
      HasSubstr("models[0].path"));
  EXPECT_THAT(
      std::string(ParseStartupConfig(R"({"models": [{"name": "a", "path": "x", "colour": 1}]})")
                      .status()
                      .message()),
      HasSubstr("models[0].colour: unknown key"));
  EXPECT_EQ(
      ParseStartupConfig(R"({"models": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]})")
          .status()
          .code(),
      absl::StatusCode::kAlreadyExists);
}

// Every shipped example (CPU and GPU nodes) parses, models and routes alike.
TEST(ParseStartupConfigTest, ExampleConfigsParse) {
  for (const char* name : {"startup.json", "startup-cpu.json", "startup-gpu.json",
                           "default-model.json"}) {
    std::ifstream in(std::string(QS_SOURCE_DIR) + "/deploy/examples/" + name);
    ASSERT_TRUE(in.good()) << name;
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = ParseStartupConfig(text.str());
    ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
    ASSERT_GE(parsed->size(), 1u) << name;
    for (const LoadRequest& request : *parsed) {
      EXPECT_TRUE(ValidateLoadRequest(request).ok()) << name << ": " << request.name;
    }
    auto routes = ParseStartupRoutes(text.str());
    EXPECT_TRUE(routes.ok()) << name << ": " << routes.status();
  }
}

}  // namespace
}  // namespace quantserve::server

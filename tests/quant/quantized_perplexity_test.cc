// Every quantization reference case (tests/fixtures/make_quant_*.py) through our loader: the
// default model quantized at load, scored on the held-out windows, and printed as one table
// (method/options x perplexity x memory footprint x load time), each row next to the
// reference library's perplexity for the same quantized weights.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/quant/quant_testing.h"

namespace quantserve::testing {
namespace {

struct Row {
  std::string name;
  std::string dtype;
  double ours = 0;
  double library = 0;
  int64_t footprint = 0;
  int64_t library_footprint = 0;
  double load_seconds = 0;
  bool int8_class = false;
  int windows = 0;
  double float_ppl = 0;  // the float32 model on the same windows
};

// Methods whose weights keep 8 bits per value: held to 1% of float perplexity.
bool IsInt8Class(const nlohmann::json& c) {
  const std::string m = c.value("quant_method", "");
  if (c.value("load_in_8bit", false)) return true;
  if (m == "eetq") return true;
  // A low activation_scale_ub clamps activations on purpose; only the default is int8-class.
  if (m == "fbgemm_fp8") return c.value("activation_scale_ub", 1200.0) >= 1200.0;
  if (m == "quanto") {
    const std::string w = c.value("weights", "int8");
    return (w == "int8" || w == "float8") && c.value("activations", nlohmann::json()).is_null();
  }
  if (m == "hqq") return c.contains("nbits") && c["nbits"] == 8;
  if (m == "torchao") return c.dump().find("nt8") != std::string::npos;  // int8_* / Int8*
  return false;
}

std::vector<std::string> CaseDirs() {
  std::vector<std::string> out;
  const std::string root = FixturesDir() + "/quant";
  if (!std::filesystem::is_directory(root)) return out;
  for (const auto& method : std::filesystem::directory_iterator(root)) {
    if (!method.is_directory()) continue;
    for (const auto& c : std::filesystem::directory_iterator(method.path())) {
      if (std::filesystem::exists(c.path() / "reference.json")) out.push_back(c.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Mb(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", bytes / 1e6);
  return buf;
}

TEST(QuantizedPerplexityTest, EveryCaseAgainstItsLibraryAndFloat) {
  const nlohmann::json windows = QuantWindows();
  ASSERT_TRUE(windows.contains("windows"));
  const double float_ppl = windows["float_perplexity"].get<double>();
  auto base = LoadDefaultModel("", "float32");
  ASSERT_TRUE(base.ok()) << base.status();
  const double our_float = Perplexity(TargetLogprobs(*base->causal_lm, windows["windows"]));
  EXPECT_NEAR(our_float, float_ppl, 1e-3 * float_ppl);

  const std::vector<std::string> dirs = CaseDirs();
  // Every on-the-fly method of the seeds contributes cases (see tests/fixtures/make_quant_*).
  for (const char* method : {"bitsandbytes", "hqq", "quanto", "eetq", "fbgemm_fp8", "torchao"}) {
    EXPECT_TRUE(std::any_of(dirs.begin(), dirs.end(),
                            [&](const std::string& d) {
                              return d.find("/quant/" + std::string(method) + "/") !=
                                     std::string::npos;
                            }))
        << "no reference case for " << method << " under " << FixturesDir() << "/quant";
  }
  std::vector<Row> rows;
  for (const std::string& dir : dirs) {
    const nlohmann::json ref = ReadJsonFile(dir + "/reference.json");
    if (!ref.contains("perplexity")) continue;  // state-only cases
    Row row;
    row.name = ref["method"].get<std::string>() + "/" + ref["case"].get<std::string>();
    row.dtype = ref.value("dtype", "float32");
    row.library = ref["perplexity"].get<double>();
    row.library_footprint = ref.value("memory_footprint_bytes", nlohmann::json(0)).is_number()
                                ? ref["memory_footprint_bytes"].get<int64_t>()
                                : 0;
    const nlohmann::json& config = ref["quantization_config"];
    row.int8_class = IsInt8Class(config);
    if (ref.contains("calibration_texts")) continue;  // needs the server's calibration pass
    // Slow reference libraries score a prefix of the windows; compare on the same prefix.
    const size_t n = ref["target_logprobs"].size();
    ASSERT_GE(n, 1u) << row.name;
    nlohmann::json case_windows = nlohmann::json::array(), float_rows = nlohmann::json::array();
    for (size_t i = 0; i < n; ++i) {
      case_windows.push_back(windows["windows"][i]);
      float_rows.push_back(windows["float_target_logprobs"][i]);
    }
    row.windows = static_cast<int>(n);
    row.float_ppl = Perplexity(JsonMatrix(float_rows));
    auto loaded = LoadDefaultModel(config.dump(), row.dtype);
    ASSERT_TRUE(loaded.ok()) << row.name << ": " << loaded.status();
    row.ours = Perplexity(TargetLogprobs(*loaded->causal_lm, case_windows));
    row.footprint = loaded->memory_footprint_bytes;
    row.load_seconds = loaded->seconds;
    // Same quantized weights, same arithmetic: perplexities agree to 0.5%.
    EXPECT_NEAR(row.ours, row.library, 5e-3 * row.library) << row.name;
    if (row.int8_class) {
      EXPECT_LE(row.ours, 1.01 * row.float_ppl) << row.name;
    }
    rows.push_back(row);
  }
  EXPECT_GE(rows.size(), 12u) << "too few reference cases";

  std::printf("\nheld-out perplexity of the default model (%d windows x %d tokens); float32 = "
              "%.3f (ours %.3f), load %.3f s, %s MB\n",
              static_cast<int>(windows["windows"].size()), windows["window"].get<int>(),
              float_ppl, our_float, base->seconds, Mb(base->memory_footprint_bytes).c_str());
  std::printf("%-40s %-9s %3s %9s %9s %9s %8s %8s %8s %7s\n", "method/case", "dtype", "win",
              "ppl", "library", "float", "vs float", "MB", "HF MB", "load s");
  for (const Row& r : rows) {
    std::printf("%-40s %-9s %3d %9.3f %9.3f %9.3f %+7.2f%% %8s %8s %7.3f\n", r.name.c_str(),
                r.dtype.c_str(), r.windows, r.ours, r.library, r.float_ppl,
                100.0 * (r.ours / r.float_ppl - 1.0), Mb(r.footprint).c_str(),
                Mb(r.library_footprint).c_str(), r.load_seconds);
  }
}

}  // namespace
}  // namespace quantserve::testing

#include "quant/methods/awq/awq_quantizer.h"

#include <gtest/gtest.h>

#include "quant/quantizer_registry.h"
#include "tests/quant/quant_testing.h"

namespace quantserve::quant {
namespace {

TEST(AwqQuantizerTest, UnquantizedCheckpointIsFailedPreconditionWithTheReason) {
  auto loaded = testing::LoadDefaultModel(R"({"quant_method": "awq", "bits": 4})");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition) << loaded.status();
  EXPECT_NE(loaded.status().message().find("AWQ needs calibration data"), absl::string_view::npos)
      << loaded.status();
  EXPECT_NE(loaded.status().message().find("requires_calibration"), absl::string_view::npos);
  EXPECT_NE(loaded.status().message().find("bitsandbytes, hqq, quanto, eetq, fbgemm_fp8, torchao"),
            absl::string_view::npos);
}

TEST(AwqQuantizerTest, InvalidConfigFailsTheLoadWithInvalidArgument) {
  auto loaded = testing::LoadDefaultModel(R"({"quant_method": "awq", "version": "exllama"})");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
}

TEST(AwqQuantizerTest, PrequantizedGemmAndGemvAreSupportedOtherLayoutsUnimplemented) {
  LoadTarget target;
  target.checkpoint_is_prequantized = true;
  for (const char* ok : {R"({"quant_method": "awq"})", R"({"version": "GEMV"})"}) {
    auto q = CreateAwqQuantizer(ok);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_TRUE((*q)->ValidateEnvironment(target).ok()) << ok;
  }
  for (const char* no : {R"({"version": "gemv_fast"})", R"({"backend": "llm-awq"})",
                         R"({"bits": 8})", R"({"zero_point": false})"}) {
    auto q = CreateAwqQuantizer(no);
    ASSERT_TRUE(q.ok()) << q.status();
    absl::Status s = (*q)->ValidateEnvironment(target);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << no << " " << s;
  }
}

TEST(AwqQuantizerTest, TraitsAreTransformers) {
  auto q = CreateAwqQuantizer(R"({"quant_method": "awq"})");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "awq");
  EXPECT_TRUE((*q)->traits().requires_calibration);
  EXPECT_TRUE((*q)->traits().is_serializable);
  EXPECT_TRUE((*q)->traits().is_trainable);
  // is_serializable is False for the exllama backends.
  for (const char* backend : {"exllama_v1", "exllama_v2"}) {
    auto e = CreateAwqQuantizer(std::string(R"({"backend": ")") + backend + "\"}");
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_FALSE((*e)->traits().is_serializable) << backend;
  }
}

TEST(AwqQuantizerTest, RegisteredUnderAwqWithTheNormalizedConfig) {
  auto q = BuiltinQuantizerRegistry().Create(R"({"quant_method": "awq", "version": "GEMV"})", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "awq");
  auto j = nlohmann::json::parse((*q)->NormalizedConfigJson());
  EXPECT_EQ(j["version"], "gemv");
  EXPECT_FALSE(j.contains("checkpoint_format"));
}

}  // namespace
}  // namespace quantserve::quant

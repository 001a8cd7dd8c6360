#include "quant/quantizer_registry.h"

#include <gtest/gtest.h>

#include "quant/methods/none/none_quantizer.h"

namespace quantserve::quant {
namespace {

QuantizerRegistry NoneOnly() {
  QuantizerRegistry r;
  EXPECT_TRUE(r.Register("none", &NoneQuantizer::Create).ok());
  return r;
}

TEST(QuantizerRegistryTest, EmptyConfigsGiveNone) {
  auto q = NoneOnly().Create("", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "none");
}

TEST(QuantizerRegistryTest, DuplicateRegistrationFails) {
  QuantizerRegistry r = NoneOnly();
  EXPECT_EQ(r.Register("none", &NoneQuantizer::Create).code(), absl::StatusCode::kAlreadyExists);
}

TEST(QuantizerRegistryTest, UnknownMethodListsTheSupportedOnes) {
  auto q = NoneOnly().Create(R"({"quant_method": "magic"})", "");
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(q.status().message().find("'magic' is not supported (supported: none)"),
            absl::string_view::npos)
      << q.status();
}

TEST(QuantizerRegistryTest, LoadInFlagsSelectBitsandbytesWithoutQuantMethod) {
  auto q = NoneOnly().Create(R"({"load_in_4bit": true})", "");
  EXPECT_NE(q.status().message().find("'bitsandbytes' is not supported"), absl::string_view::npos)
      << q.status();
}

TEST(QuantizerRegistryTest, MissingQuantMethodIsInvalid) {
  auto q = NoneOnly().Create(R"({"bits": 4})", "");
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantizerRegistryTest, RequestConflictingWithCheckpointIsInvalid) {
  auto q = NoneOnly().Create(R"({"quant_method": "hqq"})", R"({"quant_method": "gptq"})");
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(q.status().message().find("conflicts with the checkpoint's 'gptq'"),
            absl::string_view::npos);
}

TEST(QuantizerRegistryTest, BuiltinRegistryHasEveryMethodOfTheSeeds) {
  const auto methods = BuiltinQuantizerRegistry().methods();
  // The default build (QS_QUANT_METHODS unset) compiles in every method of the seeds.
  for (const char* m : {"none", "bitsandbytes", "gptq", "awq", "aqlm", "quanto", "eetq", "hqq",
                        "fbgemm_fp8", "compressed-tensors", "torchao"}) {
    EXPECT_NE(std::find(methods.begin(), methods.end(), m), methods.end()) << m;
  }
}

}  // namespace
}  // namespace quantserve::quant

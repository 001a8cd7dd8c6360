#include "quant/quantizer_registry.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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

// Echoes its config as the normalized JSON, with a default for "backend" as a real config
// class would fill it.
class EchoQuantizer final : public Quantizer {
 public:
  explicit EchoQuantizer(std::string config) {
    auto j = nlohmann::json::parse(config);
    if (!j.contains("backend")) j["backend"] = "auto";
    config_ = j.dump();
  }
  const std::string& quant_method() const override { return method_; }
  const QuantizerTraits& traits() const override { return traits_; }
  std::string NormalizedConfigJson() const override { return config_; }

 private:
  std::string method_ = "echo";
  QuantizerTraits traits_;
  std::string config_;
};

QuantizerRegistry EchoRegistry() {
  QuantizerRegistry r;
  EXPECT_TRUE(r.Register(
                   "echo",
                   [](const std::string& config) -> absl::StatusOr<std::unique_ptr<Quantizer>> {
                     if (config.find("\"bits\": \"bad\"") != std::string::npos) {
                       return absl::InvalidArgumentError("quantization_config.bits must be an int");
                     }
                     return std::unique_ptr<Quantizer>(new EchoQuantizer(config));
                   },
                   {"backend", "max_input_length"})
                  .ok());
  return r;
}

TEST(QuantizerRegistryTest, RequestOverridesOnlyLoadingAttributesOfACheckpoint) {
  auto q = EchoRegistry().Create(R"({"quant_method": "echo", "bits": 8, "backend": "marlin"})",
                                 R"({"quant_method": "echo", "bits": 4, "backend": "exllama"})");
  ASSERT_TRUE(q.ok()) << q.status();
  const auto config = nlohmann::json::parse((*q)->NormalizedConfigJson());
  EXPECT_EQ(config["bits"], 4) << "the checkpoint's bits win";
  EXPECT_EQ(config["backend"], "marlin") << "the request's loading attribute wins";
  EXPECT_FALSE(config.contains("max_input_length"));
}

TEST(QuantizerRegistryTest, RequestLoadingAttributesAreTheRequestsNormalizedValues) {
  // transformers copies get_loading_attributes() of the request's config object, defaults
  // included: a request without "backend" resets the checkpoint's to the default.
  auto q = EchoRegistry().Create(R"({"quant_method": "echo"})",
                                 R"({"quant_method": "echo", "bits": 4, "backend": "exllama"})");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(nlohmann::json::parse((*q)->NormalizedConfigJson())["backend"], "auto");
}

TEST(QuantizerRegistryTest, InvalidRequestOnACheckpointIsStillRefused) {
  auto q = EchoRegistry().Create(R"({"quant_method": "echo", "bits": "bad"})",
                                 R"({"quant_method": "echo", "bits": 4})");
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
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

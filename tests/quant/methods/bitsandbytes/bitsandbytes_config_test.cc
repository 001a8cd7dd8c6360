#include "quant/methods/bitsandbytes/bitsandbytes_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "quant/quantizer_registry.h"

namespace quantserve::quant {
namespace {

absl::Status ParseError(const std::string& json) {
  auto c = BitsAndBytesConfig::Parse(json);
  EXPECT_FALSE(c.ok()) << json;
  return c.status();
}

// INVALID_ARGUMENT whose message contains every one of `parts`.
void ExpectInvalid(const std::string& json, const std::vector<std::string>& parts) {
  absl::Status s = ParseError(json);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << json;
  for (const auto& p : parts) {
    EXPECT_NE(s.message().find(p), absl::string_view::npos) << json << " -> " << s;
  }
}

TEST(BitsAndBytesConfigTest, DefaultsAreTransformers) {
  auto c = BitsAndBytesConfig::Parse(R"({"load_in_8bit": true})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->load_in_8bit);
  EXPECT_FALSE(c->load_in_4bit);
  EXPECT_EQ(c->llm_int8_threshold, 6.0);
  EXPECT_FALSE(c->llm_int8_skip_modules.has_value());
  EXPECT_FALSE(c->llm_int8_enable_fp32_cpu_offload);
  EXPECT_FALSE(c->llm_int8_has_fp16_weight);
  EXPECT_EQ(c->bnb_4bit_compute_dtype, c10::ScalarType::Float);
  EXPECT_EQ(c->bnb_4bit_quant_type, "fp4");
  EXPECT_FALSE(c->bnb_4bit_use_double_quant);
  EXPECT_EQ(c->bnb_4bit_quant_storage, c10::ScalarType::Byte);
}

TEST(BitsAndBytesConfigTest, ToJsonIsToDictInItsKeyOrder) {
  // BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype="float").to_dict() in
  // transformers 5.23, written with json.dumps.
  auto c = BitsAndBytesConfig::Parse(
      R"({"load_in_4bit": true, "bnb_4bit_compute_dtype": "float", "quant_method": "x"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ToJson(),
            R"({"quant_method":"bitsandbytes","_load_in_8bit":false,"_load_in_4bit":true,)"
            R"("llm_int8_threshold":6.0,"llm_int8_skip_modules":null,)"
            R"("llm_int8_enable_fp32_cpu_offload":false,"llm_int8_has_fp16_weight":false,)"
            R"("bnb_4bit_quant_type":"fp4","bnb_4bit_use_double_quant":false,)"
            R"("bnb_4bit_compute_dtype":"float32","bnb_4bit_quant_storage":"uint8",)"
            R"("load_in_4bit":true,"load_in_8bit":false})");
}

TEST(BitsAndBytesConfigTest, EveryFieldIsRead) {
  auto c = BitsAndBytesConfig::Parse(R"({
    "load_in_4bit": true, "llm_int8_threshold": 2.5, "llm_int8_skip_modules": ["lm_head"],
    "llm_int8_enable_fp32_cpu_offload": true, "llm_int8_has_fp16_weight": true,
    "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": true, "bnb_4bit_quant_storage": "float32",
    "unknown_key": 1})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->llm_int8_threshold, 2.5);
  ASSERT_TRUE(c->llm_int8_skip_modules.has_value());
  EXPECT_EQ(*c->llm_int8_skip_modules, std::vector<std::string>{"lm_head"});
  EXPECT_TRUE(c->llm_int8_enable_fp32_cpu_offload);
  EXPECT_TRUE(c->llm_int8_has_fp16_weight);
  EXPECT_EQ(c->bnb_4bit_compute_dtype, c10::ScalarType::BFloat16);
  EXPECT_EQ(c->bnb_4bit_quant_type, "nf4");
  EXPECT_TRUE(c->bnb_4bit_use_double_quant);
  EXPECT_EQ(c->bnb_4bit_quant_storage, c10::ScalarType::Float);
  auto j = nlohmann::json::parse(c->ToJson());
  EXPECT_EQ(j["llm_int8_skip_modules"], nlohmann::json::array({"lm_head"}));
  EXPECT_EQ(j["bnb_4bit_compute_dtype"], "bfloat16");
  EXPECT_EQ(j["bnb_4bit_quant_storage"], "float32");
  EXPECT_FALSE(j.contains("unknown_key"));  // transformers logs and drops extra kwargs
}

TEST(BitsAndBytesConfigTest, DtypeAliasesNormalizeLikeTorch) {
  for (const auto& [given, name] :
       std::vector<std::pair<std::string, std::string>>{{"float", "float32"},
                                                        {"half", "float16"},
                                                        {"double", "float64"},
                                                        {"float16", "float16"}}) {
    auto c = BitsAndBytesConfig::Parse(R"({"load_in_4bit": true, "bnb_4bit_compute_dtype": ")" +
                                       given + "\"}");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(nlohmann::json::parse(c->ToJson())["bnb_4bit_compute_dtype"], name) << given;
  }
  auto c = BitsAndBytesConfig::Parse(
      R"({"load_in_4bit": true, "bnb_4bit_compute_dtype": null, "bnb_4bit_quant_storage": null})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->bnb_4bit_compute_dtype, c10::ScalarType::Float);
  EXPECT_EQ(c->bnb_4bit_quant_storage, c10::ScalarType::Byte);
}

// One test per transformers / bnb validation rule.
TEST(BitsAndBytesConfigTest, LoadInFlagsMustBeBooleans) {
  ExpectInvalid(R"({"load_in_8bit": 1})", {"load_in_8bit", "true or false", "(got 1)"});
  ExpectInvalid(R"({"load_in_4bit": "true"})", {"load_in_4bit", "true or false"});
}

TEST(BitsAndBytesConfigTest, BothLoadInFlagsIsAnError) {
  ExpectInvalid(R"({"load_in_8bit": true, "load_in_4bit": true})",
                {"load_in_4bit", "load_in_8bit", "both true", "only one"});
}

TEST(BitsAndBytesConfigTest, NeitherLoadInFlagIsAnError) {
  ExpectInvalid(R"({"quant_method": "bitsandbytes"})",
                {"one of load_in_8bit or load_in_4bit", "true"});
  ExpectInvalid(R"({"load_in_8bit": false, "load_in_4bit": false})", {"one of load_in_8bit"});
}

TEST(BitsAndBytesConfigTest, ThresholdMustBeAFloat) {
  // isinstance(llm_int8_threshold, float): JSON 6 is an int in Python.
  ExpectInvalid(R"({"load_in_8bit": true, "llm_int8_threshold": 6})",
                {"llm_int8_threshold", "a float", "(got 6)"});
  ExpectInvalid(R"({"load_in_8bit": true, "llm_int8_threshold": "6.0"})", {"llm_int8_threshold"});
  EXPECT_TRUE(
      BitsAndBytesConfig::Parse(R"({"load_in_8bit": true, "llm_int8_threshold": 0.0})").ok());
}

TEST(BitsAndBytesConfigTest, SkipModulesMustBeAListOfStrings) {
  ExpectInvalid(R"({"load_in_8bit": true, "llm_int8_skip_modules": "lm_head"})",
                {"llm_int8_skip_modules", "list"});
  ExpectInvalid(R"({"load_in_8bit": true, "llm_int8_skip_modules": [1]})",
                {"llm_int8_skip_modules", "list of strings"});
  auto c = BitsAndBytesConfig::Parse(R"({"load_in_8bit": true, "llm_int8_skip_modules": null})");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->llm_int8_skip_modules.has_value());
}

TEST(BitsAndBytesConfigTest, OffloadAndFp16WeightMustBeBooleans) {
  ExpectInvalid(R"({"load_in_8bit": true, "llm_int8_enable_fp32_cpu_offload": 1})",
                {"llm_int8_enable_fp32_cpu_offload", "true or false"});
  ExpectInvalid(R"({"load_in_8bit": true, "llm_int8_has_fp16_weight": "no"})",
                {"llm_int8_has_fp16_weight", "true or false"});
}

TEST(BitsAndBytesConfigTest, ComputeDtypeMustNameAFloatDtype) {
  ExpectInvalid(R"({"load_in_4bit": true, "bnb_4bit_compute_dtype": "fp32"})",
                {"bnb_4bit_compute_dtype", "dtype name", "\"bfloat16\"", "(got \"fp32\")"});
  ExpectInvalid(R"({"load_in_4bit": true, "bnb_4bit_compute_dtype": "int8"})",
                {"bnb_4bit_compute_dtype"});
  ExpectInvalid(R"({"load_in_4bit": true, "bnb_4bit_compute_dtype": 16})",
                {"bnb_4bit_compute_dtype", "(got 16)"});
}

TEST(BitsAndBytesConfigTest, QuantTypeMustBeFp4OrNf4) {
  ExpectInvalid(R"({"load_in_4bit": true, "bnb_4bit_quant_type": 4})",
                {"bnb_4bit_quant_type", "a string"});
  ExpectInvalid(R"({"load_in_4bit": true, "bnb_4bit_quant_type": "nf5"})",
                {"bnb_4bit_quant_type", "one of \"fp4\", \"nf4\"", "(got \"nf5\")"});
  ExpectInvalid(R"({"load_in_4bit": true, "bnb_4bit_quant_type": "NF4"})", {"bnb_4bit_quant_type"});
}

TEST(BitsAndBytesConfigTest, DoubleQuantMustBeABoolean) {
  ExpectInvalid(R"({"load_in_4bit": true, "bnb_4bit_use_double_quant": 1})",
                {"bnb_4bit_use_double_quant", "true or false"});
}

TEST(BitsAndBytesConfigTest, QuantStorageMustBeInTransformersList) {
  ExpectInvalid(
      R"({"load_in_4bit": true, "bnb_4bit_quant_storage": "int4"})",
      {"bnb_4bit_quant_storage", R"("float16", "float32", "int8", "uint8", "float64", "bfloat16")",
       "(got \"int4\")"});
  ExpectInvalid(R"({"load_in_4bit": true, "bnb_4bit_quant_storage": 8})",
                {"bnb_4bit_quant_storage"});
  for (const char* s : {"float16", "float32", "int8", "uint8", "float64", "bfloat16"}) {
    EXPECT_TRUE(BitsAndBytesConfig::Parse(std::string(R"({"load_in_4bit": true, )") +
                                          R"("bnb_4bit_quant_storage": ")" + s + "\"}")
                    .ok())
        << s;
  }
}

TEST(BitsAndBytesConfigTest, NotAnObject) {
  EXPECT_EQ(ParseError("[]").code(), absl::StatusCode::kInvalidArgument);
}

TEST(BitsAndBytesConfigTest, RegistryDispatchesOnTheLoadInFlags) {
  const QuantizerRegistry& r = BuiltinQuantizerRegistry();
  auto q = r.Create(R"({"load_in_4bit": true, "bnb_4bit_quant_type": "nf4"})", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->quant_method(), "bitsandbytes");
  EXPECT_TRUE((*q)->traits().requires_parameters_quantization);
  EXPECT_FALSE((*q)->traits().requires_calibration);
  EXPECT_EQ(nlohmann::json::parse((*q)->NormalizedConfigJson())["bnb_4bit_quant_type"], "nf4");
  auto bad = r.Create(R"({"quant_method": "bitsandbytes"})", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantserve::quant

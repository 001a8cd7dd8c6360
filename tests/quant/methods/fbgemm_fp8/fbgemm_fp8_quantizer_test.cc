// The default model quantized at load with FBGEMM FP8 against
// tests/fixtures/make_quant_fbgemm_fp8.py (fbgemm-gpu's quantize_fp8_per_row and
// f8f8bf16_rowwise arithmetic in torch on the bfloat16 HF model).

#include "quant/methods/fbgemm_fp8/fbgemm_fp8_quantizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include "quant/methods/fbgemm_fp8/fbgemm_fp8_linear.h"
#include "tests/quant/quant_testing.h"

namespace quantserve::testing {
namespace {

using quant::FbgemmFp8Linear;
using quant::FbgemmFp8Quantizer;

struct Case {
  const char* name;
  double logprob_atol;  // max |log p| difference to the reference (see below)
};

class FbgemmFp8CaseTest : public ::testing::TestWithParam<Case> {};

TEST_P(FbgemmFp8CaseTest, MatchesTheReference) {
  const std::string name = GetParam().name;
  const nlohmann::json ref = QuantCaseReference("fbgemm_fp8", name);
  ASSERT_TRUE(ref.contains("quantization_config"));
  ASSERT_EQ(ref["dtype"], "bfloat16");
  auto loaded = LoadDefaultModel(ref["quantization_config"].dump(), ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const auto& model = *loaded->causal_lm;
  EXPECT_EQ(loaded->dtype, at::kBFloat16);
  auto* quantizer = dynamic_cast<FbgemmFp8Quantizer*>(loaded->quantizer.get());
  ASSERT_NE(quantizer, nullptr);

  const auto converted = quantizer->converted_modules();
  testing::ExpectConversionMatches(*quantizer,
                                   const_cast<models::LlamaForCausalLM&>(model), ref);
  const float ub = ref["quantization_config"].value("activation_scale_ub", 1200.0);
  for (const auto& m : converted) {
    auto* lin = dynamic_cast<FbgemmFp8Linear*>(quantizer->converted_module(m));
    ASSERT_NE(lin, nullptr) << m;
    EXPECT_EQ(lin->activation_scale_ub(), ub) << m;
  }

  // fp8 codes and float32 scales, bit for bit (IEEE division and RNE conversion).
  EXPECT_EQ(ExpectStateMatches(model, QuantCaseDir("fbgemm_fp8", name) + "/reference.safetensors"),
            2 * static_cast<int>(converted.size()));

  auto deq = loader::ReadSafetensorsFile(
      common::Env::Default(), QuantCaseDir("fbgemm_fp8", name) + "/dequantized.safetensors");
  ASSERT_TRUE(deq.ok()) << deq.status();
  EXPECT_FALSE(deq->empty());
  for (const auto& [key, want] : *deq) {
    const std::string module = key.substr(0, key.size() - std::string(".weight").size());
    auto* lin = dynamic_cast<FbgemmFp8Linear*>(quantizer->converted_module(module));
    ASSERT_NE(lin, nullptr) << module;
    EXPECT_TRUE(at::equal(lin->Dequantize(), want)) << module;
  }

  const nlohmann::json windows = QuantWindows();
  at::Tensor ours = TargetLogprobs(model, windows["windows"]);
  at::Tensor want = JsonMatrix(ref["target_logprobs"]);
  const double max_diff = (ours - want).abs().max().item<double>();
  const double mean_diff = (ours - want).abs().mean().item<double>();
  EXPECT_LE(max_diff, GetParam().logprob_atol) << name;
  const double ppl = Perplexity(ours);
  const double ref_ppl = ref["perplexity"].get<double>();
  EXPECT_NEAR(ppl, ref_ppl, 1e-3 * ref_ppl) << name;
  std::printf(
      "fbgemm_fp8/%s: max |logprob diff| %.3g (mean %.3g), perplexity %.4f (reference "
      "%.4f)\n",
      name.c_str(), max_diff, mean_diff, ppl, ref_ppl);

  // transformers' get_memory_footprint also counts buffers: the rotary inv_freq pair (256
  // bytes) and each FbgemmFp8Linear's float32 input_scale_ub (4 bytes x 28).
  EXPECT_EQ(loaded->memory_footprint_bytes,
            ref["memory_footprint_bytes"].get<int64_t>() - ref["buffer_bytes"].get<int64_t>());
  EXPECT_EQ(ref["buffer_bytes"].get<int64_t>(), 256 + 4 * static_cast<int64_t>(converted.size()));
}

// Measured identical (0): both sides run the same bfloat16 ops on the same ATen. The margin
// covers op-order changes in either model's code: one bfloat16 rounding difference can move an
// activation across an e4m3 boundary, which per-token fp8 quantization turns into a full step.
INSTANTIATE_TEST_SUITE_P(Cases, FbgemmFp8CaseTest,
                         ::testing::Values(Case{"default", 0.05}, Case{"small_scale_ub", 0.05}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(FbgemmFp8QuantizerTest, AnyRequestedDtypeLoadsInBfloat16) {
  for (const char* dtype : {"float32", "float16"}) {
    auto loaded = LoadDefaultModel(R"({"quant_method": "fbgemm_fp8"})", dtype);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->dtype, at::kBFloat16) << dtype;
  }
}

}  // namespace
}  // namespace quantserve::testing

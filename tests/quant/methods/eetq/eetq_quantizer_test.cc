// The default model quantized at load with EETQ against tests/fixtures/make_quant_eetq.py
// (EETQ's symmetric_quantize in numpy; the model's Linears compute x @ (q * scale)^T).

#include "quant/methods/eetq/eetq_quantizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "quant/methods/eetq/eetq_linear.h"
#include "tests/quant/quant_testing.h"

namespace quantserve::testing {
namespace {

using quant::EetqLinear;
using quant::EetqQuantizer;

class EetqCaseTest : public ::testing::TestWithParam<const char*> {};

TEST_P(EetqCaseTest, MatchesTheReference) {
  const std::string name = GetParam();
  const nlohmann::json ref = QuantCaseReference("eetq", name);
  ASSERT_TRUE(ref.contains("quantization_config"));
  auto loaded = LoadDefaultModel(ref["quantization_config"].dump(), ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const auto& model = *loaded->causal_lm;
  EXPECT_EQ(loaded->dtype, at::kFloat);
  auto* quantizer = dynamic_cast<EetqQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(quantizer, nullptr);

  // Which modules were converted: transformers' rule, as recorded by the fixture.
  const auto converted = quantizer->converted_modules();
  testing::ExpectConversionMatches(*quantizer,
                                   const_cast<models::LlamaForCausalLM&>(model), ref);

  // The quantized state, bit for bit (the formula is deterministic integer/IEEE arithmetic).
  EXPECT_EQ(ExpectStateMatches(model, QuantCaseDir("eetq", name) + "/reference.safetensors"),
            2 * static_cast<int>(converted.size()));

  // Dequantize() against the reference's dequantized weights, bit for bit.
  auto deq = loader::ReadSafetensorsFile(common::Env::Default(),
                                         QuantCaseDir("eetq", name) + "/dequantized.safetensors");
  ASSERT_TRUE(deq.ok()) << deq.status();
  EXPECT_FALSE(deq->empty());
  for (const auto& [key, want] : *deq) {
    const std::string module = key.substr(0, key.size() - std::string(".weight").size());
    auto* lin = dynamic_cast<EetqLinear*>(quantizer->converted_module(module));
    ASSERT_NE(lin, nullptr) << module;
    EXPECT_TRUE(at::equal(lin->Dequantize(), want)) << module;
  }

  // Same weights, same float32 arithmetic, same ATen: measured identical (0). The margin
  // covers op-order changes in either model's code (attention/RoPE/RMSNorm).
  const nlohmann::json windows = QuantWindows();
  at::Tensor ours = TargetLogprobs(model, windows["windows"]);
  at::Tensor want = JsonMatrix(ref["target_logprobs"]);
  const double max_diff = (ours - want).abs().max().item<double>();
  EXPECT_LE(max_diff, 1e-4) << name;
  EXPECT_NEAR(Perplexity(ours), ref["perplexity"].get<double>(),
              1e-4 * ref["perplexity"].get<double>());
  std::printf("eetq/%s: max |logprob diff| %.3g, perplexity %.4f (reference %.4f)\n", name.c_str(),
              max_diff, Perplexity(ours), ref["perplexity"].get<double>());

  // transformers' get_memory_footprint counts buffers too (the rotary inv_freq pair, 256 bytes);
  // ours counts parameters and quantization state only.
  // Ours also counts the packed copies the CPU kernels read (runtime state), less the
  // serialized codes they replace (released_bytes).
  int64_t packed = 0;
  for (const auto& module : quantizer->converted_modules()) {
    const auto* m = quantizer->converted_module(module);
    if (m->packed_weight() != nullptr) packed += m->packed_weight()->bytes() - m->released_bytes();
  }
  EXPECT_EQ(loaded->memory_footprint_bytes - packed,
            ref["memory_footprint_bytes"].get<int64_t>() - ref["buffer_bytes"].get<int64_t>());

  EXPECT_EQ(nlohmann::json::parse(quantizer->NormalizedConfigJson())["quant_method"], "eetq");
}

INSTANTIATE_TEST_SUITE_P(Cases, EetqCaseTest,
                         ::testing::Values("default", "modules_to_not_convert"));

TEST(EetqQuantizerTest, SkipListReplacesNothingButTheMatchingModules) {
  auto loaded = LoadDefaultModel(
      R"({"quant_method": "eetq", "modules_to_not_convert": ["model.layers.1", "down_proj"]})");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* quantizer = dynamic_cast<EetqQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(quantizer, nullptr);
  const auto converted = quantizer->converted_modules();
  // 28 - 7 (layer 1) - 3 (down_proj of layers 0, 2, 3).
  EXPECT_EQ(converted.size(), 18u);
  for (const auto& m : converted) {
    EXPECT_EQ(m.find("model.layers.1."), std::string::npos) << m;
    EXPECT_EQ(m.find("down_proj"), std::string::npos) << m;
  }
}

TEST(EetqQuantizerTest, LoadsInFloat16WithFloat16Dequantization) {
  auto loaded = LoadDefaultModel(R"({"quant_method": "eetq"})", "float16");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->dtype, at::kHalf);
  auto* quantizer = dynamic_cast<EetqQuantizer*>(loaded->quantizer.get());
  auto* lin =
      dynamic_cast<EetqLinear*>(quantizer->converted_module("model.layers.0.self_attn.q_proj"));
  ASSERT_NE(lin, nullptr);
  EXPECT_EQ(lin->Dequantize().scalar_type(), at::kHalf);
  // EETQ's own dtype: one window scored in float16 stays within 2% of float32's perplexity.
  const nlohmann::json windows = QuantWindows();
  const nlohmann::json one = nlohmann::json::array({windows["windows"][0]});
  const double ppl = Perplexity(TargetLogprobs(*loaded->causal_lm, one));
  const double float_ppl =
      Perplexity(JsonMatrix(nlohmann::json::array({windows["float_target_logprobs"][0]})));
  EXPECT_NEAR(ppl, float_ppl, 0.02 * float_ppl);
}

}  // namespace
}  // namespace quantserve::testing

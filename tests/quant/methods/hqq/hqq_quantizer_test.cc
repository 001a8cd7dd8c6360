// hqq through our loader against tests/fixtures/make_quant_hqq.py: the default model quantized
// at load with each case's quantization_config, compared with hqq 0.2.8.post1's HQQLinear
// (CPU) state (bit-exact), dequantized weights, logprobs, perplexity, footprint, normalized
// config and converted/skipped modules.

#include "quant/methods/hqq/hqq_quantizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "quant/linear_quantizer.h"
#include "quant/methods/hqq/hqq_linear.h"
#include "quant/quantizer_registry.h"
#include "tests/quant/quant_testing.h"

namespace quantserve::quant {
namespace {

using testing::ExpectStateMatches;
using testing::JsonMatrix;
using testing::LoadDefaultModel;
using testing::Perplexity;
using testing::QuantCaseDir;
using testing::QuantCaseReference;
using testing::QuantWindows;
using testing::TargetLogprobs;

struct Case {
  const char* name;
  // Max |our logprob - the HF model's with HQQLinear| over the 8 x 255 evaluation tokens. The
  // dequantized weights are bit-identical, and on the reference path the forward is hqq's
  // (matmul(x, W.t())) with the fixture's LibTorch build, so the logprobs agree exactly on
  // this machine (measured 0 in float32 and bfloat16). The tolerance leaves room for ATen
  // choosing another reduction split with a different thread count, and for the packed CPU
  // kernel of 4-bit axis-1 modules, which evaluates (q - zero)·scale as q·scale + offset in
  // float32 and sums in its own order: measured 3.6e-6 in float32. In bfloat16 it also skips
  // the bfloat16 rounding of each weight: measured 0.058 (the reference path's tolerance
  // was 5e-2).
  double logprob_atol;
};

constexpr double kF32 = 1e-5;
constexpr double kBf16 = 8e-2;
const Case kCases[] = {
    {"4bit_g64_axis1", kF32},     {"4bit_g64_axis0", kF32},
    {"8bit_g64", kF32},           {"3bit_g64", kF32},
    {"2bit_g16", kF32},           {"1bit_g8", kF32},
    {"1p58bit_g64_axis0", kF32},  {"4bit_per_channel", kF32},
    {"4bit_view_as_float", kF32}, {"dynamic", kF32},
    {"skip_modules", kF32},       {"to_dict_form_no_optimize", kF32},
    {"4bit_g64_bfloat16", kBf16},
};

class HqqCaseTest : public ::testing::TestWithParam<Case> {};

TEST_P(HqqCaseTest, MatchesHqq) {
  const Case& c = GetParam();
  const nlohmann::json ref = QuantCaseReference("hqq", c.name);
  ASSERT_TRUE(ref.contains("quantization_config")) << c.name;
  const std::string dtype = ref.value("dtype", "float32");
  auto loaded = LoadDefaultModel(ref["quantization_config"].dump(), dtype);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<LinearQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->quant_method(), "hqq");

  // Normalized config: transformers' HqqConfig.to_dict().
  EXPECT_EQ(nlohmann::json::parse(q->NormalizedConfigJson()), ref["normalized_config"]);

  // Converted and skipped modules (prepare_for_hqq_linear's tag rule); skipped ones stay float.
  std::vector<std::string> ours = q->converted_modules();
  std::sort(ours.begin(), ours.end());
  EXPECT_EQ(ours, ref["quantized_modules"].get<std::vector<std::string>>());
  for (const auto& name : ref["skipped_modules"].get<std::vector<std::string>>()) {
    EXPECT_EQ(q->converted_module(name), nullptr) << name;
  }
  for (const auto& m : loaded->causal_lm->NamedModules()) {
    if (m.name.size() > 5 && m.name.substr(m.name.size() - 5) == "_proj" &&
        q->converted_module(m.name) == nullptr) {
      EXPECT_STREQ(m.module->type_name(), "Linear") << m.name;
    }
  }

  // The whole HQQLinear state dict, bit-exact: W_q, scale, zero and hqq's encoded metadata.
  const std::string dir = QuantCaseDir("hqq", c.name);
  const int compared = ExpectStateMatches(*loaded->causal_lm, dir + "/reference.safetensors");
  int64_t state_names = 0;
  for (const auto& name : ours) {
    const auto params = q->converted_module(name)->NamedParameters();
    state_names += static_cast<int64_t>(params.size()) - 1;  // all but the `weight` input slot
    // `weight` aliases W_q, so the packed codes are counted once.
    ASSERT_GE(params.size(), 2u);
    EXPECT_EQ(params[0].name, "weight");
    EXPECT_EQ(params[1].name, "W_q");
    EXPECT_EQ(params[0].slot.tensor->data_ptr(), params[1].slot.tensor->data_ptr()) << name;
  }
  EXPECT_EQ(compared, state_names);

  // Dequantize() against HQQLinear.dequantize(), bit-exact.
  auto deq = loader::ReadSafetensorsFile(common::Env::Default(), dir + "/dequantized.safetensors");
  ASSERT_TRUE(deq.ok()) << deq.status();
  EXPECT_EQ(deq->size(), ours.size());
  for (const auto& [key, want] : *deq) {
    const std::string module = key.substr(0, key.size() - 7);
    QuantizedLinear* m = q->converted_module(module);
    ASSERT_NE(m, nullptr) << module;
    const at::Tensor got = m->Dequantize();
    ASSERT_EQ(got.scalar_type(), want.scalar_type()) << key;
    EXPECT_TRUE(at::equal(got, want))
        << key << " max diff " << (got.to(at::kDouble) - want.to(at::kDouble)).abs().max();
  }

  // Logprobs and perplexity on the held-out windows.
  const nlohmann::json windows = QuantWindows();
  const at::Tensor lp = TargetLogprobs(*loaded->causal_lm, windows["windows"]);
  const at::Tensor want = JsonMatrix(ref["target_logprobs"]);
  const double max_diff = (lp - want).abs().max().item<double>();
  EXPECT_LE(max_diff, c.logprob_atol) << c.name;
  const double ppl = Perplexity(lp);
  const double ref_ppl = ref["perplexity"].get<double>();
  EXPECT_NEAR(ppl, ref_ppl, (dtype == "float32" ? 1e-6 : 1e-3) * ref_ppl) << c.name;

  // Footprint: every tensor of the quantized model's state dict once (what a saved HQQ model
  // holds), plus the packed kernel weights of the CPU fast path (hqq has none). transformers'
  // get_memory_footprint counts parameters and buffers only: of each HQQLinear just W_q (hqq
  // keeps scale/zero/metadata in a plain dict), plus the rotary inv_freq buffer we do not
  // hold as a parameter.
  int64_t packed_bytes = 0;  // less the serialized codes the packed copy replaces
  for (const auto& name : ours) {
    const auto* m = q->converted_module(name);
    packed_bytes += m->runtime_bytes() - m->released_bytes();
  }
  const int64_t state_bytes = loaded->memory_footprint_bytes - packed_bytes;
  EXPECT_EQ(state_bytes, ref["state_bytes"].get<int64_t>());
  EXPECT_EQ(state_bytes,
            ref["memory_footprint_bytes"].get<int64_t>() - ref["hf_buffers_bytes"].get<int64_t>() +
                ref["hqq_state_bytes_outside_parameters"].get<int64_t>());
  std::printf("hqq/%s: max |dlogprob| %.3g, ppl %.4f vs %.4f, footprint %lld = state %lld + "
              "packed kernels %lld (HF reports %lld)\n",
              c.name, max_diff, ppl, ref_ppl,
              static_cast<long long>(loaded->memory_footprint_bytes),
              static_cast<long long>(state_bytes), static_cast<long long>(packed_bytes),
              static_cast<long long>(ref["memory_footprint_bytes"].get<int64_t>()));

  // The packed kernel runs exactly where the layout fits it: 4-bit, axis 1, groups that are
  // runs of one row; every other module keeps hqq's dequantize + matmul.
  for (const auto& name : ours) {
    const auto* h = dynamic_cast<const HqqLinear*>(q->converted_module(name));
    ASSERT_NE(h, nullptr) << name;
    const bool fits = h->params().nbits == 4 && h->params().axis == 1 &&
                      h->options().in_features % h->layout().group_size == 0;
    const std::string kernel = h->kernel_name();
    EXPECT_EQ(kernel.find("dequant") == std::string::npos, fits)
        << c.name << " " << name << ": " << kernel;
    EXPECT_EQ(h->runtime_bytes() > 0, fits) << c.name << " " << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, HqqCaseTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

TEST(HqqQuantizerTest, TraitsAsHqqHfQuantizer) {
  auto q = HqqQuantizer::Create(R"({"quant_method": "hqq"})");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_FALSE((*q)->traits().requires_calibration);
  EXPECT_TRUE((*q)->traits().is_serializable);
  EXPECT_TRUE((*q)->traits().is_trainable);
  EXPECT_EQ((*q)->UpdateTorchDtype(at::kBFloat16), at::kBFloat16);
  EXPECT_EQ((*q)->UpdateTorchDtype(at::kFloat), at::kFloat);
}

TEST(HqqQuantizerTest, RegisteredUnderHqq) {
  const auto methods = BuiltinQuantizerRegistry().methods();
  EXPECT_NE(std::find(methods.begin(), methods.end(), "hqq"), methods.end());
}

std::vector<std::string> Converted(const std::string& config) {
  auto loaded = LoadDefaultModel(config);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return {};
  auto* q = dynamic_cast<LinearQuantizer*>(loaded->quantizer.get());
  std::vector<std::string> out = q->converted_modules();
  std::sort(out.begin(), out.end());
  return out;
}

// A to_dict-form layer config without the solver, so these rule tests load quickly; the
// to_dict form's quant_config goes through the same prepare_for_hqq_linear as dynamic_config.
constexpr char kFastLayer[] =
    R"({"weight_quant_params": {"nbits": 4, "group_size": 64, "optimize": false, "axis": 1},
        "scale_quant_params": null, "zero_quant_params": null, "offload_meta": false})";

TEST(HqqQuantizerTest, PerTagEntriesWinOverSkipModules) {
  // prepare_for_hqq_linear re-adds a skipped tag through patch_params.update(quant_config), so
  // up_proj is quantized although skip_modules lists it; down_proj (no entry) stays float.
  const auto converted = Converted(std::string(R"({"quant_method": "hqq", "quant_config": {
      "mlp.up_proj": )") + kFastLayer +
                                   R"(, "mlp.gate_proj": )" + kFastLayer + R"(},
      "skip_modules": ["lm_head", "mlp.up_proj"]})");
  ASSERT_EQ(converted.size(), 8u);
  for (const auto& name : converted) {
    EXPECT_TRUE(name.find("up_proj") != name.npos || name.find("gate_proj") != name.npos) << name;
  }
}

TEST(HqqQuantizerTest, SkipModulesAreExactTagsNotSubstrings) {
  // "up_proj" is not the tag "mlp.up_proj", and "model.layers.0.mlp.up_proj" is not a tag.
  const std::string layer = std::string(R"({"quant_method": "hqq", "quant_config": )") +
                            kFastLayer + R"(, "skip_modules": )";
  EXPECT_EQ(Converted(layer + R"(["lm_head", "up_proj", "model.layers.0.mlp.up_proj"]})").size(),
            28u);
  EXPECT_EQ(Converted(layer + R"(["lm_head", "mlp.up_proj"]})").size(), 24u);
}

TEST(HqqQuantizerTest, PerTagConfigNamingNoLinearIsInvalid) {
  auto loaded = LoadDefaultModel(R"({"quant_method": "hqq", "dynamic_config": {
      "mlp.up_proj": {"nbits": 4}}, "skip_modules": ["lm_head", "mlp.up_proj"]})");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("none of the per-tag hqq configs (mlp.up_proj)"),
            absl::string_view::npos)
      << loaded.status();
  loaded = LoadDefaultModel(R"({"quant_method": "hqq", "dynamic_config": {"attn.q": {}}})");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HqqQuantizerTest, TiedLmHeadIsNotQuantized) {
  auto loaded = LoadDefaultModel(R"({"quant_method": "hqq", "skip_modules": []})");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(loaded.status().message().find(
                "hqq would quantize lm_head (tag 'lm_head'), whose weight is tied to "
                "model.embed_tokens.weight"),
            absl::string_view::npos)
      << loaded.status();
}

TEST(HqqQuantizerTest, GroupSizeNotDividingAWeightFailsBeforeLoading) {
  // q_proj [256, 256] has 65536 elements, not a multiple of 24 (a to_dict config may use any
  // positive group size; hqq asserts numel % group_size == 0).
  auto loaded = LoadDefaultModel(R"({"quant_method": "hqq", "quant_config": {
      "weight_quant_params": {"group_size": 24, "axis": 1}, "scale_quant_params": null,
      "zero_quant_params": null, "offload_meta": false}, "skip_modules": ["lm_head"]})");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("hqq group_size 24 does not divide the [256, 256] "
                                           "weight"),
            absl::string_view::npos)
      << loaded.status();
}

}  // namespace
}  // namespace quantserve::quant

// QuantizedLinear's one-resident-copy contract (ReleaseToPacked): a module whose CPU kernel
// holds its codes drops its own serialized copy, its footprint is the quantized size, and
// what Save and Dequantize rebuild from the kernel still describes the weight the kernel
// multiplies by. Bit-exactness of the rebuilt serialized state is save_roundtrip_test's and
// each method's prequant test's (they read it through the same path).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "quant/kernels/packed_weight.h"
#include "quant/quantized_linear.h"
#include "tests/quant/prequant_testing.h"

namespace quantserve::testing {
namespace {

struct Case {
  std::string name;
  // Pre-quantized fixture (method/case) or, when empty, the default model quantized at load
  // with `config`.
  std::string prequant;
  std::string config;
  // Largest footprint per weight the packed modules may keep, in bytes: the codes (0.5 for
  // 4-bit, 1 for int8) plus the kernel's float32 scale and offset per group and the method's
  // own scales, zeros and g_idx. Two copies of the codes would exceed it.
  double max_bytes_per_weight;
};

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {"bnb_nf4_at_load", "", R"({"load_in_4bit": true, "bnb_4bit_quant_type": "nf4"})", 0.65},
      {"bnb_fp4_double_quant_at_load", "",
       R"({"load_in_4bit": true, "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": true})",
       0.65},
      {"hqq_4bit_g64_at_load", "", R"({"quant_method": "hqq", "nbits": 4, "group_size": 64})",
       0.8},
      {"quanto_int4_at_load", "", R"({"quant_method": "quanto", "weights": "int4"})", 0.65},
      {"eetq_int8_at_load", "", R"({"quant_method": "eetq", "weights": "int8"})", 1.05},
      {"gptq_4bit_g128", "gptq/4bit_g128_sym_v1", "", 0.65},
      {"gptq_4bit_g32_desc_act", "gptq/4bit_g32_asym_v2_descact", "", 1.0},
      {"awq_gemm_g128", "awq/gemm_g128", "", 0.65},
      {"awq_gemv_g32", "awq/gemv_g32", "", 1.15},
      {"bnb_fp4_storage_bf16", "bitsandbytes/fp4_storage_bf16", "", 0.65},
      {"compressed_tensors_w4a16_g32_asym", "compressed_tensors/w4a16_g32_asym", "", 0.95},
      {"hqq_4bit_view_as_float", "hqq/4bit_view_as_float", "", 0.8},
      {"quanto_int4", "quanto/int4", "", 0.65},
      {"torchao_int4", "torchao/int4_weight_only", "", 0.65},
      {"eetq", "eetq/default", "", 1.05},
  };
  return cases;
}

class OneResidentCopyTest : public ::testing::TestWithParam<Case> {};

TEST_P(OneResidentCopyTest, PackedModulesDropTheirSerializedCodes) {
  if (!quant::kernels::KernelsEnabled()) GTEST_SKIP() << "QS_KERNELS=ref: nothing is packed";
  const Case& c = GetParam();
  const size_t slash = c.prequant.find('/');
  auto model = c.prequant.empty()
                   ? LoadDefaultModel(c.config)
                   : LoadModelDir(PrequantCheckpoint(c.prequant.substr(0, slash),
                                                     c.prequant.substr(slash + 1)));
  ASSERT_TRUE(model.ok()) << model.status();
  at::manual_seed(0);
  int checked = 0;
  double weights = 0, bytes = 0;
  for (const auto& m : model->causal_lm->NamedModules()) {
    const auto* q = dynamic_cast<const quant::QuantizedLinear*>(m.module);
    if (q == nullptr || q->packed_weight() == nullptr) continue;
    SCOPED_TRACE(m.name + " " + q->kernel_name());
    const int64_t n = q->options().out_features;
    const int64_t k = q->options().in_features;
    // The serialized codes are gone; the kernel's copy is the only one.
    EXPECT_GT(q->released_bytes(), 0);
    weights += static_cast<double>(n * k);
    bytes += static_cast<double>(q->memory_footprint_bytes());
    // Dequantize, rebuilt from the kernel's codes, is the weight the kernel multiplies by.
    const at::Tensor x = at::randn({3, k}).to(q->options().dtype);
    const at::Tensor ours = q->packed_weight()->Matmul(x).to(at::kFloat);
    const at::Tensor ref = at::matmul(x.to(at::kFloat), q->Dequantize().to(at::kFloat).t());
    // Within the kernels' int16 inputs and a bf16/fp16 dequantized weight's rounding; codes
    // rebuilt wrongly would be off by the weight's own size.
    const double scale = ref.abs().max().item<double>();
    EXPECT_LE((ours - ref).abs().max().item<double>(), 1e-2 * scale + 1e-6);
    // What Save writes holds real tensors again.
    auto state = q->SerializedTensors();
    ASSERT_TRUE(state.ok()) << state.status();
    for (const auto& [name, t] : *state) EXPECT_FALSE(t.is_meta()) << name;
    ++checked;
  }
  EXPECT_GT(checked, 0);
  // Over all packed modules (a small projection's g_idx or bias weighs more per weight).
  EXPECT_LE(bytes, c.max_bytes_per_weight * weights);
  std::cout << c.name << ": " << checked << " packed modules hold " << bytes / weights
            << " bytes per weight; model footprint " << model->memory_footprint_bytes << "\n";
}

INSTANTIATE_TEST_SUITE_P(Methods, OneResidentCopyTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace quantserve::testing

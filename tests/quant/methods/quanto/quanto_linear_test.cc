// QuantoLinear against optimum-quanto 0.2.7's QLinear on synthetic modules (the "edge" case of
// tests/fixtures/make_quant_quanto.py): every group-size rule, row counts that are not a
// multiple of the packing factor, zero rows and groups, one output row, and each
// weights x activations forward path. State, Dequantize() and Forward() match bit for bit.
// Plus packing, group size, calibration and error rules.

#include "quant/methods/quanto/quanto_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "common/env.h"
#include "loader/load_pipeline.h"
#include "tests/quant/quant_testing.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {
namespace {

bool BitEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor x = a.contiguous().cpu(), y = b.contiguous().cpu();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

std::shared_ptr<QuantoLinear> Make(int64_t n, int64_t k, const char* weights,
                                   const char* activations = nullptr, bool bias = false,
                                   c10::ScalarType dtype = at::kFloat) {
  QuantoLinearOptions o;
  o.linear = {.in_features = k, .out_features = n, .bias = bias, .dtype = dtype};
  o.weights = FindQuantoQType(weights);
  o.activations = activations == nullptr ? nullptr : FindQuantoQType(activations);
  auto m = QuantoLinear::Create(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : nullptr;
}

TEST(QuantoLinearTest, GroupSizeRule) {
  // 128, minus 32 while K % G != 0 and G > 32; per row (0) when K <= 128 or none divides.
  EXPECT_EQ(QuantoLinear::GroupSize(64), 0);
  EXPECT_EQ(QuantoLinear::GroupSize(128), 0);
  EXPECT_EQ(QuantoLinear::GroupSize(256), 128);
  EXPECT_EQ(QuantoLinear::GroupSize(768), 128);
  EXPECT_EQ(QuantoLinear::GroupSize(192), 96);
  EXPECT_EQ(QuantoLinear::GroupSize(320), 64);
  EXPECT_EQ(QuantoLinear::GroupSize(160), 32);
  EXPECT_EQ(QuantoLinear::GroupSize(200), 0);
  EXPECT_EQ(QuantoLinear::GroupSize(129), 0);
}

TEST(QuantoLinearTest, PackingIsPlanarAlongRows) {
  // Three 2-bit rows share one packed row: row i goes to bits 2i.
  at::Tensor u = at::tensor({1, 2, 3}, at::kByte).reshape({3, 1});
  at::Tensor p = QuantoPackWeights(u, 2);
  ASSERT_EQ(p.sizes(), at::IntArrayRef({1, 1}));
  EXPECT_EQ(p.item<uint8_t>(), 1 | (2 << 2) | (3 << 4));
  // Five 4-bit rows: ceil(5/2) = 3 packed rows; rows 3, 4 go to the high nibbles of 0, 1.
  at::Tensor v = at::arange(10, at::kByte).reshape({5, 2});
  at::Tensor q = QuantoPackWeights(v, 4);
  ASSERT_EQ(q.sizes(), at::IntArrayRef({3, 2}));
  EXPECT_EQ(q[0][0].item<uint8_t>(), 0 | (6 << 4));
  EXPECT_EQ(q[2][1].item<uint8_t>(), 5);
  EXPECT_TRUE(BitEqual(QuantoUnpackWeights(q, 4, 5), v));
  at::Tensor w = at::randint(0, 4, {15, 32}, at::kByte);
  EXPECT_TRUE(BitEqual(QuantoUnpackWeights(QuantoPackWeights(w, 2), 2, 15), w));
}

TEST(QuantoLinearTest, MatchesOptimumQuantoEdgeModules) {
  const std::string dir = testing::QuantCaseDir("quanto", "edge");
  const nlohmann::json ref = testing::ReadJsonFile(dir + "/reference.json");
  ASSERT_TRUE(ref.contains("modules"));
  auto tensors =
      loader::ReadSafetensorsFile(common::Env::Default(), dir + "/reference.safetensors");
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  const auto& t = *tensors;
  int checked = 0;
  for (const auto& spec : ref["modules"]) {
    const std::string name = spec["name"];
    SCOPED_TRACE(name);
    const std::string w = spec["weights"];
    const std::string a =
        spec["activations"].is_null() ? "" : spec["activations"].get<std::string>();
    const c10::ScalarType dtype = spec["dtype"] == "bfloat16" ? at::kBFloat16 : at::kFloat;
    auto m = Make(spec["out_features"], spec["in_features"], w.c_str(),
                  a.empty() ? nullptr : a.c_str(), spec["bias"], dtype);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->group_size(),
              spec["group_size"].is_null() ? 0 : spec["group_size"].get<int64_t>());
    ASSERT_TRUE(m->QuantizeWeight(t.at(name + ".w"), LoadTarget{}).ok());
    if (spec["bias"].get<bool>()) m->bias = t.at(name + ".bias");
    if (!a.empty()) m->input_scale = t.at(name + ".input_scale");
    // The whole state_dict, nothing more, nothing less.
    std::map<std::string, at::Tensor> ours;
    for (auto& [pname, t] : ResidentParameters(*m)) ours.emplace(pname, t);
    int state = 0;
    for (const auto& [key, want] : t) {
      if (key.rfind(name + ".", 0) != 0) continue;
      const std::string local = key.substr(name.size() + 1);
      if (local == "w" || local == "x" || local == "y" || local == "dequantized") continue;
      ++state;
      ASSERT_EQ(ours.count(local), 1u) << local;
      if (a.empty() && dtype != at::kFloat && local.find("put_scale") != std::string::npos) {
        // Unused ones: optimum-quanto's own QLinear keeps them in the weight dtype, transformers'
        // QuantoQuantize (which we follow for weight-only) makes them float32.
        EXPECT_EQ(ours.at(local).scalar_type(), at::kFloat);
        EXPECT_EQ(ours.at(local).item<float>(), want.item<float>());
        continue;
      }
      EXPECT_TRUE(BitEqual(ours.at(local), want)) << local << ": " << ours.at(local) << want;
    }
    EXPECT_EQ(state, static_cast<int>(ours.size()));
    EXPECT_TRUE(BitEqual(m->Dequantize(), t.at(name + ".dequantized")));
    at::Tensor y = m->Forward(t.at(name + ".x"));
    const kernels::PackedWeight* packed = m->packed_weight();
    if (packed == nullptr) {
      EXPECT_TRUE(BitEqual(y, t.at(name + ".y")))
          << "max |dy| " << (y - t.at(name + ".y")).abs().max().item<float>() << " via "
          << m->kernel_name();
    } else {
      // The packed CPU kernel (weight-only int8/int4) rounds x to int16 per 32 values
      // (kernels/cpu_kernels.h) and, in bf16, rounds once where quanto rounds the weight or
      // x @ q^T to bf16: 2e-4 of the output scale in float32, 1/64 (a few bf16 roundings) in
      // bf16. Was bit-equal with the reference path.
      const at::Tensor want = t.at(name + ".y").to(at::kFloat);
      const double scale = want.abs().max().item<double>();
      const double err = (y.to(at::kFloat) - want).abs().max().item<double>() / scale;
      EXPECT_LE(err, dtype == at::kFloat ? 2e-4 : 1.0 / 64) << "via " << m->kernel_name();
    }
    if (name == "bf16_int8") {
      EXPECT_EQ(m->kernel_name(), packed != nullptr ? packed->name() : "qbytes_mm_w8a32_quanto");
    }
    EXPECT_EQ(m->memory_footprint_bytes() - (packed != nullptr ? packed->bytes() : 0) +
                  m->released_bytes(),
              [&] {
      int64_t n = 0;
      for (const auto& [k, v] : ours) n += v.numel() * v.element_size();
      return n;
    }());
    ++checked;
  }
  EXPECT_EQ(checked, 15);
}

TEST(QuantoLinearTest, Float8ZeroRowIsRefused) {
  // optimum-quanto would store 0/0 = NaN for the whole row (see the fixture's k96_float8).
  auto m = Make(3, 16, "float8");
  at::Tensor w = at::randn({3, 16});
  w[1].zero_();
  absl::Status s = m->QuantizeWeight(w, LoadTarget{});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("row 1"), absl::string_view::npos) << s;
}

TEST(QuantoLinearTest, IntZeroRowsDequantizeToZero) {
  for (const char* q : {"int8", "int4", "int2"}) {
    auto m = Make(4, 64, q);
    at::Tensor w = at::randn({4, 64});
    w[2].zero_();
    ASSERT_TRUE(m->QuantizeWeight(w, LoadTarget{}).ok()) << q;
    EXPECT_EQ(m->Dequantize()[2].abs().max().item<float>(), 0.0f) << q;
  }
}

TEST(QuantoLinearTest, OneRowLowBitWithoutGroupsIsRefused) {
  auto m = Make(1, 64, "int4");
  absl::Status s = m->QuantizeWeight(at::randn({1, 64}), LoadTarget{});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  // With groups (K = 256) the grouped weight has two rows and is fine.
  auto g = Make(1, 256, "int4");
  EXPECT_TRUE(g->QuantizeWeight(at::randn({1, 256}), LoadTarget{}).ok());
}

TEST(QuantoLinearTest, CreateRejectsBadOptions) {
  QuantoLinearOptions o;
  o.linear = {.in_features = 8, .out_features = 8};
  EXPECT_FALSE(QuantoLinear::Create(o).ok());
  o.weights = FindQuantoQType("int8");
  o.activations = FindQuantoQType("int4");
  EXPECT_EQ(QuantoLinear::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FindQuantoQType("int3"), nullptr);
}

TEST(QuantoLinearTest, StateNamesAndFloatWeightIsDropped) {
  auto m = Make(8, 256, "int2", "int8", true);
  std::vector<std::string> names;
  for (const auto& p : m->NamedParameters()) names.push_back(p.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"weight", "weight._data._data", "weight._scale",
                                      "weight._shift", "bias", "input_scale", "output_scale"}));
  ASSERT_TRUE(m->QuantizeWeight(at::randn({8, 256}), LoadTarget{}).ok());
  names.clear();
  for (const auto& p : m->NamedParameters()) names.push_back(p.name);
  EXPECT_EQ(names.front(), "weight._data._data");
  EXPECT_EQ(names.size(), 6u);
  // R = 8*256/128 = 16 groups, 4 per byte.
  EXPECT_EQ(m->data.sizes(), at::IntArrayRef({4, 128}));
  EXPECT_EQ(m->scale.sizes(), at::IntArrayRef({16, 1}));
  // Activation scales are in the compute dtype; weight-only ones are float32 (transformers).
  auto bf = Make(8, 64, "int8");
  EXPECT_EQ(bf->input_scale.scalar_type(), at::kFloat);
}

TEST(QuantoLinearTest, CalibrationFollowsOptimumQuanto) {
  auto m = Make(6, 32, "int8", "int8", false);
  ASSERT_TRUE(m->QuantizeWeight(at::randn({6, 32}), LoadTarget{}).ok());
  at::Tensor x1 = at::randn({1, 4, 32});
  at::Tensor x2 = 3 * at::randn({1, 7, 32});
  m->BeginCalibration();
  at::Tensor y1 = m->Forward(x1);
  // First call: the new absmax scale replaces the initial 1; the output comes back quantized
  // with its own absmax scale (integers times s_out).
  const at::Tensor s_in1 = at::max(at::abs(x1)) / 127;
  at::Tensor raw1 = at::_int_mm(
      at::clamp(at::round(x1 / s_in1), -128, 127).to(at::kChar).reshape({-1, 32}), m->data.t());
  at::Tensor out1 = (raw1.to(at::kFloat) * (s_in1 * m->scale).t()).reshape({1, 4, 6});
  const at::Tensor s_out1 = at::max(at::abs(out1)) / 127;
  EXPECT_TRUE(BitEqual(y1, s_out1 * at::clamp(at::round(out1 / s_out1), -128, 127).to(at::kChar)));
  // Second call: momentum 0.9, output left unquantized.
  at::Tensor y2 = m->Forward(x2);
  const at::Tensor s_in2 = s_in1 * 0.9 + (at::max(at::abs(x2)) / 127) * (1.0 - 0.9);
  m->EndCalibration();
  EXPECT_TRUE(BitEqual(m->input_scale, s_in2));
  EXPECT_TRUE(BitEqual(y2, m->Forward(x2)));
  const at::Tensor s_out2 = s_out1 * 0.9 + (at::max(at::abs(y2)) / 127) * (1.0 - 0.9);
  EXPECT_TRUE(BitEqual(m->output_scale, s_out2));
}

// Weight-only int8 and int4 modules on the CPU run the packed kernels; int2 and
// activation-quantized modules keep quanto's arithmetic.
TEST(QuantoLinearTest, WeightOnlyInt8AndInt4RunThePackedKernels) {
  at::manual_seed(11);
  const bool scalar = kernels::CpuKernelLevel() == "scalar";
  struct Case {
    const char* weights;
    int64_t k;
    std::string kernel;       // float32 module
    std::string kernel_bf16;  // bfloat16 module
  };
  // float32 and bf16 modules both run our integer kernels on AVX2; without AVX2 a bf16 int8
  // module runs LibTorch's _weight_int8pack_mm. int4 with 24 output rows never fits
  // LibTorch's int4 packing (N % 16), so it stays on ours everywhere.
  const std::string int8 = scalar ? "int8_q16_scalar" : "int8_q16_avx2";
  const std::string int4 = "lut4";  // resolved per module below: the kernel depends on the group
  const std::vector<Case> cases = {
      {"int8", 96, int8, scalar ? "aten_weight_int8pack_mm" : int8},
      {"int4", 256, int4, int4},
      {"int4", 96, int4, int4},
  };
  for (const Case& c : cases) {
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      SCOPED_TRACE(::testing::Message() << c.weights << " K=" << c.k << " dtype=" << dtype);
      auto m = Make(24, c.k, c.weights, nullptr, /*bias=*/true, dtype);
      ASSERT_NE(m, nullptr);
      ASSERT_TRUE(m->QuantizeWeight(at::randn({24, c.k}), LoadTarget{}).ok());
      m->bias = at::randn({24}).to(dtype);
      std::string want = dtype == at::kFloat ? c.kernel : c.kernel_bf16;
      if (want == int4) {
        want = kernels::CpuLut4KernelName(/*affine=*/true,
                                          m->group_size() > 0 ? m->group_size() : c.k);
      }
      EXPECT_EQ(m->kernel_name(), want);
      ASSERT_NE(m->packed_weight(), nullptr);
      for (int64_t rows : {1, 5}) {
        const at::Tensor x = at::randn({rows, c.k}).to(dtype);
        const at::Tensor want =
            at::linear(x.to(at::kFloat), m->Dequantize().to(at::kFloat), m->bias.to(at::kFloat));
        const at::Tensor y = m->Forward(x);
        EXPECT_EQ(y.scalar_type(), dtype);
        const double scale = want.abs().max().item<double>();
        // fp32: x rounded to int16 per 32 values (kernels/cpu_kernels.h). bf16: quanto's
        // dequantized weight is bf16 already; our float32 sum is rounded to bf16 before and
        // after the bias add (2^-8 each).
        const double err = (y.to(at::kFloat) - want).abs().max().item<double>() / scale;
        EXPECT_LE(err, dtype == at::kFloat ? 2e-4 : 1.0 / 64);
      }
    }
  }
  auto int2 = Make(24, 256, "int2");
  ASSERT_TRUE(int2->QuantizeWeight(at::randn({24, 256}), LoadTarget{}).ok());
  EXPECT_EQ(int2->packed_weight(), nullptr);
  auto w8a8 = Make(24, 96, "int8", "int8");
  ASSERT_TRUE(w8a8->QuantizeWeight(at::randn({24, 96}), LoadTarget{}).ok());
  EXPECT_EQ(w8a8->packed_weight(), nullptr);
}

}  // namespace
}  // namespace quantserve::quant

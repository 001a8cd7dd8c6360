// Checkpoints pre-quantized by AutoAWQ 0.2.9 (tests/fixtures/make_prequant_awq.py): gemm and
// gemv packing, group sizes 128/64/32, loaded against AutoAWQ's naive CPU inference; the
// unpacking order on a hand-made word; request loading attributes (backend,
// max_input_length) and a conflicting quant_method; corrupt copies naming the tensor; and
// load -> SaveModel -> reload giving the checkpoint's own tensors back byte for byte.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/env.h"
#include "loader/model_saver.h"
#include "loader/safetensors_file.h"
#include "quant/methods/awq/awq_linear.h"
#include "quant/methods/awq/awq_quantizer.h"
#include "tests/quant/prequant_testing.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {
namespace {

using testing::LoadModelDir;
using testing::PrequantCheckpoint;
using testing::PrequantReference;
using testing::TempDir;

constexpr char kMethod[] = "awq";
constexpr char kQProj[] = "model.layers.0.self_attn.q_proj";
constexpr char kDownProj[] = "model.layers.1.mlp.down_proj";

using testing::BitEqual;
using testing::ReadTensors;
using testing::TensorMap;

std::string CorruptCopy(const std::string& name, const std::string& tag,
                        const std::function<void(TensorMap&)>& edit) {
  return testing::CorruptCopy(kMethod, name, tag, edit);
}

void ExpectError(const absl::StatusOr<loader::LoadedModel>& got, absl::StatusCode code,
                 const std::vector<std::string>& needles) {
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), code) << got.status();
  for (const auto& s : needles) {
    EXPECT_NE(got.status().message().find(s), std::string::npos)
        << "'" << s << "' not in: " << got.status();
  }
}

// A packed kernel's name: not a reference path, nor the generic dequantizing fallback.
bool IsFastKernel(const std::string& name) {
  return name.find("dequant") == std::string::npos && name.find("_ref") == std::string::npos;
}

// Max |dlogprob| against AutoAWQ's naive fp16 path. The reference path (fp16 weights) measured
// 1.09e-3 .. 1.48e-3 (reference.json's logprob_atol 2e-3); the packed kernel computes
// (q - z)·s in float32 without the fp16 weight rounding: measured 1.71e-3 (g128),
// 2.47e-3 (gemm_g64), 2.12e-3 (gemv_g32), same greedy tokens.
constexpr double kPackedAtol = 3e-3;
double Atol(const nlohmann::json& ref) {
  return QuantizedLinear::KernelsEnabled() ? kPackedAtol : ref.at("logprob_atol").get<double>();
}

class AwqPrequantTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AwqPrequantTest, MatchesAutoAwq) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, GetParam()), "", ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<AwqQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->converted_modules(), ref["converted_modules"].get<std::vector<std::string>>());
  EXPECT_EQ(q->converted_module("lm_head"), nullptr);
  EXPECT_NE(dynamic_cast<AwqLinear*>(q->converted_module(kQProj)), nullptr);
  // Every AWQ layout fits the Lut4 kernel on the CPU (groups divide K by construction).
  for (const auto& name : q->converted_modules()) {
    EXPECT_EQ(IsFastKernel(q->converted_module(name)->kernel_name()),
              QuantizedLinear::KernelsEnabled())
        << name << ": " << q->converted_module(name)->kernel_name();
  }
  const double diff = testing::ExpectMatchesLibrary(*loaded, ref, Atol(ref));
  std::cout << "[awq prequant] " << GetParam() << ": max |dlogprob| vs AutoAWQ " << diff
            << " (atol " << Atol(ref) << "), kernel "
            << q->converted_module(kQProj)->kernel_name() << ", footprint "
            << loaded->memory_footprint_bytes << " B, load " << loaded->seconds << " s\n";
}

// Pre-quantized load -> SaveModel -> reload: the saved file holds the checkpoint's tensors
// byte for byte (AutoAWQ's save_quantized layout), every parameter reloads bit for bit, and
// the logprobs are identical.
TEST_P(AwqPrequantTest, SaveAndReloadIsIdentical) {
  const std::string dir = PrequantCheckpoint(kMethod, GetParam());
  auto loaded = LoadModelDir(dir, "", "float32");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  loader::SaveModelOptions o;
  o.output_dir = TempDir("awq_save_" + GetParam());
  auto saved = loader::SaveModel(*loaded, dir, o);
  ASSERT_TRUE(saved.ok()) << saved.status();
  const TensorMap original = ReadTensors(dir + "/model.safetensors");
  const TensorMap written = ReadTensors(o.output_dir + "/model.safetensors");
  EXPECT_EQ(written.size(), original.size());
  for (const auto& [name, t] : original) {
    auto it = written.find(name);
    ASSERT_NE(it, written.end()) << name;
    EXPECT_TRUE(BitEqual(t, it->second)) << name;
  }
  const nlohmann::json cfg = testing::ReadJsonFile(o.output_dir + "/config.json");
  const nlohmann::json want = PrequantReference(kMethod, GetParam())["quantization_config"];
  for (const char* key : {"quant_method", "bits", "group_size", "zero_point", "version"}) {
    EXPECT_EQ(cfg["quantization_config"][key], want[key]) << key;
  }

  auto reloaded = LoadModelDir(o.output_dir, "", "float32");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  TensorMap before;
  for (auto& [name, t] : quant::ResidentParameters(*loaded->causal_lm)) before.emplace(name, t);
  for (const auto& [name, t] : quant::ResidentParameters(*reloaded->causal_lm)) {
    auto it = before.find(name);
    ASSERT_NE(it, before.end()) << name;
    EXPECT_TRUE(BitEqual(it->second, t)) << name;
  }
  nlohmann::json one = nlohmann::json::array({testing::QuantWindows()["windows"][0]});
  EXPECT_TRUE(at::equal(testing::TargetLogprobs(*loaded->causal_lm, one),
                        testing::TargetLogprobs(*reloaded->causal_lm, one)));
}

INSTANTIATE_TEST_SUITE_P(Cases, AwqPrequantTest,
                         ::testing::Values("gemm_g128", "gemm_g64", "gemv_g128", "gemv_g32"),
                         [](const auto& info) { return info.param; });

// One hand-packed word per layout: gemm nibble i holds output column kAwqOrder[i]; gemv
// nibble i holds input column i. Dequantize is (q - z) * s in fp16, [out, in].
TEST(AwqLinearTest, UnpacksTheAwqNibbleOrders) {
  LoadTarget target;
  target.checkpoint_is_prequantized = true;
  const int32_t word = 0x76543210;  // nibble i = i
  {
    models::LinearOptions lo;
    lo.in_features = 8;
    lo.out_features = 8;
    lo.bias = false;
    auto m = AwqLinear::Create(lo, {.packing = AwqPacking::kGemm, .group_size = -1});
    ASSERT_TRUE(m.ok()) << m.status();
    at::Tensor qw = at::full({8, 1}, word, at::kInt);
    ASSERT_TRUE((*m)->LoadSerializedTensor("qweight", "x.qweight", qw, target).ok());
    ASSERT_TRUE((*m)->LoadSerializedTensor("qzeros", "x.qzeros", at::full({1, 1}, 0x11111111, at::kInt), target).ok());
    ASSERT_TRUE((*m)->LoadSerializedTensor("scales", "x.scales", at::full({1, 8}, 0.5, at::kHalf), target).ok());
    ASSERT_TRUE((*m)->FinishSerializedLoad("x", target).ok());
    at::Tensor w = (*m)->Dequantize();  // [out, in]
    EXPECT_EQ(w.scalar_type(), at::kHalf);
    const float want[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // column n holds nibble kAwqReverse[n]
    for (int n = 0; n < 8; ++n) {
      EXPECT_EQ(w[n][0].item<float>(), (want[n] - 1) * 0.5f) << n;
    }
  }
  {
    models::LinearOptions lo;
    lo.in_features = 128;
    lo.out_features = 8;
    lo.bias = false;
    auto m = AwqLinear::Create(lo, {.packing = AwqPacking::kGemv, .group_size = 128});
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->qzeros.sizes(), at::IntArrayRef({8, 1}));
    EXPECT_EQ((*m)->scales.sizes(), at::IntArrayRef({8, 8}));
    at::Tensor qw = at::full({8, 16}, word, at::kInt);
    at::Tensor sc = at::zeros({8, 8}, at::kHalf);
    sc.select(1, 0).fill_(2.0);
    ASSERT_TRUE((*m)->LoadSerializedTensor("qweight", "x.qweight", qw, target).ok());
    ASSERT_TRUE((*m)->LoadSerializedTensor("qzeros", "x.qzeros", at::full({8, 1}, 3, at::kInt), target).ok());
    ASSERT_TRUE((*m)->LoadSerializedTensor("scales", "x.scales", sc, target).ok());
    ASSERT_TRUE((*m)->FinishSerializedLoad("x", target).ok());
    at::Tensor w = (*m)->Dequantize();
    for (int k = 0; k < 8; ++k) EXPECT_EQ(w[5][k].item<float>(), (k - 3) * 2.0f) << k;
  }
}

// A random gemm/gemv module K = 1024, N = 16 (every packed nibble and scale in use), with
// bias, through FinishSerializedLoad on the CPU.
std::shared_ptr<AwqLinear> RandomAwq(AwqPacking packing, int64_t group) {
  models::LinearOptions lo;
  lo.in_features = 1024;
  lo.out_features = 16;
  lo.bias = true;
  auto m = AwqLinear::Create(lo, {.packing = packing, .group_size = group});
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  LoadTarget target;
  target.checkpoint_is_prequantized = true;
  const int64_t groups = 1024 / group;
  const bool gemm = packing == AwqPacking::kGemm;
  auto words = [](std::vector<int64_t> shape) {
    return at::randint(-(int64_t{1} << 31), int64_t{1} << 31, shape, at::kLong).to(at::kInt);
  };
  at::Tensor qz = words(gemm ? std::vector<int64_t>{groups, 2} : std::vector<int64_t>{16, 1});
  at::Tensor sc = (at::rand(gemm ? std::vector<int64_t>{groups, 16} : std::vector<int64_t>{16, 8}) *
                       0.02 + 0.001).to(at::kHalf);
  EXPECT_TRUE((*m)->LoadSerializedTensor(
                      "qweight", "x.qweight",
                      words(gemm ? std::vector<int64_t>{1024, 2} : std::vector<int64_t>{16, 128}),
                      target).ok());
  EXPECT_TRUE((*m)->LoadSerializedTensor("qzeros", "x.qzeros", qz, target).ok());
  EXPECT_TRUE((*m)->LoadSerializedTensor("scales", "x.scales", sc, target).ok());
  EXPECT_TRUE(
      (*m)->LoadSerializedTensor("bias", "x.bias", at::randn({16}).to(at::kHalf), target).ok());
  const absl::Status s = (*m)->FinishSerializedLoad("x", target);
  EXPECT_TRUE(s.ok()) << s;
  return *m;
}

TEST(AwqLinearTest, PackedKernelMatchesTheDequantizedReference) {
  at::manual_seed(11);
  for (const auto& [packing, group] : {std::pair{AwqPacking::kGemm, int64_t{128}},
                                       std::pair{AwqPacking::kGemm, int64_t{32}},
                                       std::pair{AwqPacking::kGemv, int64_t{128}}}) {
    auto m = RandomAwq(packing, group);
    ASSERT_NE(m, nullptr);
    const std::string what = m->LayoutName();
    EXPECT_TRUE(IsFastKernel(m->kernel_name())) << what << ": " << m->kernel_name();
    // The int8 codes [K, N] are gone; the kernel's copy is smaller (4-bit or one byte each).
    const int64_t small = 3 * (1024 / group) * 16;  // zeros int8 + scales fp16 [K/G, N]
    EXPECT_LE(m->runtime_bytes(), small + 1024 * 16 + 2 * 4 * (1024 / group) * 16) << what;
    EXPECT_GT(m->runtime_bytes(), small) << what;
    // Reference: the naive path (x in fp16, x @ Dequantize()ᵀ accumulated in float32, one
    // fp16 rounding) + bias. The kernel does not round the weight to fp16 (at most 2^-11 of
    // each |x·w| term) and rounds the output once, and the bias sum once, like the reference:
    // two fp16 half-ulps (2^-11 relative each) on top.
    const at::Tensor x = at::randn({3, 1024});
    const at::Tensor xh = x.to(at::kHalf).to(at::kFloat);
    const at::Tensor w = m->Dequantize().to(at::kFloat);
    const at::Tensor ref = at::matmul(xh, w.t()).to(at::kHalf).to(at::kFloat) +
                           m->bias.to(at::kFloat);
    const at::Tensor got = m->Forward(x);
    EXPECT_EQ(got.scalar_type(), at::kFloat) << what;
    const at::Tensor bound = at::matmul(xh.abs(), w.abs().t()) * (1.0 / 2048) +
                             (ref.abs() + m->bias.to(at::kFloat).abs()) * (2.0 / 2048) + 1e-4;
    EXPECT_TRUE(((got - ref).abs() <= bound).all().item<bool>())
        << what << ": max |diff| " << (got - ref).abs().max();
  }
}

TEST(AwqLinearTest, GemvZerosWidthIsAutoAwqs) {
  EXPECT_EQ(AwqGemvZerosWidth(256, 128), 1);
  EXPECT_EQ(AwqGemvZerosWidth(256, 64), 2);   // 4 groups -> 1 word -> multiple of 2
  EXPECT_EQ(AwqGemvZerosWidth(256, 32), 4);   // 8 groups -> 1 word -> multiple of 4
  EXPECT_EQ(AwqGemvZerosWidth(768, 32), 4);   // 24 groups -> 3 words -> 4
  EXPECT_EQ(AwqGemvZerosWidth(4096, 128), 4); // 32 groups -> 4 words
  EXPECT_EQ(AwqGemvZerosWidth(256, 16), -1);
}

// GPTQConfig.get_loading_attributes: backend and max_input_length from the request overwrite
// the checkpoint's; the request's other fields (group_size here) are ignored.
TEST(AwqPrequantConfigTest, RequestOverridesLoadingAttributesOnly) {
  const nlohmann::json ref = PrequantReference(kMethod, "gemm_g128");
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, "gemm_g128"),
                             R"({"quant_method": "awq", "backend": "torch_awq",
                                 "max_input_length": 4096, "group_size": 64})");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const nlohmann::json cfg = nlohmann::json::parse(loaded->quantizer->NormalizedConfigJson());
  EXPECT_EQ(cfg["backend"], "torch_awq");
  EXPECT_EQ(cfg["max_input_length"], 4096);
  EXPECT_EQ(cfg["group_size"], 128);
  testing::ExpectMatchesLibrary(*loaded, ref, Atol(ref));
}

TEST(AwqPrequantConfigTest, ConflictingOrInvalidRequestIsRejected) {
  auto gptq = LoadModelDir(PrequantCheckpoint(kMethod, "gemm_g128"),
                           R"({"quant_method": "gptq", "bits": 4, "group_size": 128})");
  ExpectError(gptq, absl::StatusCode::kInvalidArgument, {"gptq", "awq"});
  auto bad = LoadModelDir(PrequantCheckpoint(kMethod, "gemm_g128"),
                          R"({"quant_method": "awq", "backend": "nope"})");
  ExpectError(bad, absl::StatusCode::kInvalidArgument, {"backend"});
}

TEST(AwqPrequantCorruptTest, WrongPackedQweightShape) {
  const std::string name = std::string(kQProj) + ".qweight";
  const std::string dir = CorruptCopy("gemm_g128", "qweight_shape", [&](TensorMap& t) {
    t[name] = t[name].narrow(1, 0, 16).contiguous();
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument,
              {name, "[256, 16]", "awq gemm 4-bit, group_size 128", "[256, 32]"});
}

TEST(AwqPrequantCorruptTest, GemvLayoutInAGemmCheckpoint) {
  // gemv's [N, K/8] qweight where gemm expects [K, N/8] (down_proj: 256 x 768).
  const std::string name = std::string(kDownProj) + ".qweight";
  const std::string dir = CorruptCopy("gemm_g128", "qweight_gemv", [&](TensorMap& t) {
    t[name] = at::zeros({256, 96}, at::kInt);
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {name, "[768, 32]"});
}

TEST(AwqPrequantCorruptTest, QweightStoredAsFloat) {
  const std::string name = std::string(kQProj) + ".qweight";
  const std::string dir = CorruptCopy("gemm_g64", "qweight_float", [&](TensorMap& t) {
    t[name] = t[name].to(at::kFloat);
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {name, "Float", "Int"});
}

TEST(AwqPrequantCorruptTest, MissingQzeros) {
  const std::string name = std::string(kQProj) + ".qzeros";
  const std::string dir = CorruptCopy("gemm_g128", "no_qzeros", [&](TensorMap& t) { t.erase(name); });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {"missing", name});
}

TEST(AwqPrequantCorruptTest, NonFiniteScale) {
  const std::string name = std::string(kQProj) + ".scales";
  const std::string dir = CorruptCopy("gemm_g128", "scale_nan", [&](TensorMap& t) {
    t[name] = t[name].clone();
    t[name][1][7] = std::numeric_limits<float>::quiet_NaN();
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kDataLoss, {name, "nan", "[1, 7]"});
}

TEST(AwqPrequantCorruptTest, GemvZeroPaddingNotZero) {
  // gemv g32, down_proj (K = 768): 24 groups in 4 words, so word 3 is padding.
  const std::string name = std::string(kDownProj) + ".qzeros";
  const std::string dir = CorruptCopy("gemv_g32", "gemv_pad", [&](TensorMap& t) {
    t[name] = t[name].clone();
    t[name][2][3] = 5;
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kDataLoss, {name, "padding", "row 2", "group 24"});
}

TEST(AwqPrequantCorruptTest, GemvScalePaddingNotZero) {
  const std::string name = std::string(kQProj) + ".scales";
  const std::string dir = CorruptCopy("gemv_g32", "gemv_scale_pad", [&](TensorMap& t) {
    t[name] = t[name].clone();
    t[name][0][9] = 1.0;
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kDataLoss, {name, "padding", "column 9"});
}

}  // namespace
}  // namespace quantserve::quant

// Pre-quantized compressed-tensors checkpoints (tests/fixtures/make_prequant_compressed_tensors.py):
// our load and inference against transformers 5.23 + compressed-tensors 0.20 on CPU, the
// loading attributes, corrupt checkpoints and the save -> reload round trip.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include "quant/linear_quantizer.h"
#include "quant/methods/compressed_tensors/compressed_tensors_linear.h"
#include "tests/quant/prequant_testing.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {
namespace {

using testing::LoadModelDir;
using testing::PrequantCheckpoint;
using testing::PrequantReference;

const char kMethod[] = "compressed_tensors";

std::string RequestConfig(const nlohmann::json& ref) {
  return ref.at("request_config").is_null() ? "" : ref.at("request_config").dump();
}

absl::StatusOr<loader::LoadedModel> LoadCase(const std::string& name) {
  return LoadModelDir(PrequantCheckpoint(kMethod, name), RequestConfig(PrequantReference(kMethod, name)));
}

const CompressedTensorsLinear* Module(const loader::LoadedModel& m, const std::string& name) {
  auto* q = dynamic_cast<const LinearQuantizer*>(m.quantizer.get());
  if (q == nullptr) return nullptr;
  return dynamic_cast<const CompressedTensorsLinear*>(q->converted_module(name));
}

class CompressedTensorsPrequantCaseTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CompressedTensorsPrequantCaseTest, MatchesTransformers) {
  auto model = LoadCase(GetParam());
  ASSERT_TRUE(model.ok()) << model.status();
  const double diff = testing::ExpectMatchesLibrary(*model, PrequantReference(kMethod, GetParam()));
  std::cout << GetParam() << ": max |dlogprob| " << diff << "\n";
}

TEST_P(CompressedTensorsPrequantCaseTest, SaveAndReloadIsIdentical) {
  const std::string source = PrequantCheckpoint(kMethod, GetParam());
  auto model = LoadCase(GetParam());
  ASSERT_TRUE(model.ok()) << model.status();
  // SaveAndReload, keeping the directory to compare its config.json.
  loader::SaveModelOptions o;
  o.output_dir = testing::TempDir(std::string("ct_") + GetParam());
  auto saved = loader::SaveModel(*model, source, o);
  ASSERT_TRUE(saved.ok()) << saved.status();
  auto reloaded = LoadModelDir(o.output_dir, "", loader::TorchDtypeName(model->dtype));
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  // Every tensor as loaded from the library's checkpoint (so the saved files hold the
  // library's bytes), dtype included.
  std::map<std::string, at::Tensor> before;
  for (auto& [name, t] : quant::ResidentParameters(*model->causal_lm)) before[name] = t;
  int compared = 0;
  for (const auto& [name, b] : quant::ResidentParameters(*reloaded->causal_lm)) {
    ASSERT_TRUE(before.count(name)) << name;
    const at::Tensor& a = before[name];
    ASSERT_EQ(a.scalar_type(), b.scalar_type()) << name;
    ASSERT_EQ(a.sizes(), b.sizes()) << name;
    EXPECT_TRUE(at::equal(a.view(at::kByte), b.view(at::kByte))) << name;
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(before.size()));
  // The quantization_config as compressed-tensors wrote it.
  auto config = [](const std::string& dir) {
    return testing::ReadJsonFile(dir + "/config.json").at("quantization_config");
  };
  EXPECT_EQ(config(o.output_dir), config(source));
  // Identical inference.
  nlohmann::json windows = testing::QuantWindows()["windows"];
  nlohmann::json used = {windows[0]};
  EXPECT_TRUE(at::equal(testing::TargetLogprobs(*model->causal_lm, used),
                        testing::TargetLogprobs(*reloaded->causal_lm, used)));
}

INSTANTIATE_TEST_SUITE_P(Cases, CompressedTensorsPrequantCaseTest,
                         ::testing::Values("w4a16_g128_sym", "w4a16_g32_asym", "w8a8_int_dynamic",
                                           "fp8_static", "mixed_ignore"));

TEST(CompressedTensorsPrequantTest, TargetsAndIgnoreMatchLikeCompressedTensors) {
  auto model = LoadCase("mixed_ignore");
  ASSERT_TRUE(model.ok()) << model.status();
  // Exact-name and "re:" ignore entries keep these float.
  EXPECT_EQ(Module(*model, "model.layers.0.self_attn.q_proj"), nullptr);
  for (const char* m : {"gate_proj", "up_proj", "down_proj"}) {
    EXPECT_EQ(Module(*model, std::string("model.layers.3.mlp.") + m), nullptr) << m;
  }
  // The "re:" target beats the "Linear" class target for o_proj.
  const auto* o = Module(*model, "model.layers.1.self_attn.o_proj");
  ASSERT_NE(o, nullptr);
  EXPECT_EQ(o->ct_options().format, "naive-quantized");
  EXPECT_EQ(o->ct_options().scheme.weights->num_bits, 8);
  const auto* k = Module(*model, "model.layers.1.self_attn.k_proj");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->ct_options().format, "pack-quantized");
  EXPECT_EQ(k->ct_options().scheme.weights->group_size, 64);
  EXPECT_NE(Module(*model, "model.layers.0.self_attn.k_proj"), nullptr);
  EXPECT_EQ(Module(*model, "lm_head"), nullptr);
}

// A packed kernel's name: not a reference path, nor the generic dequantizing fallback.
bool IsFastKernel(const std::string& name) {
  return name.find("dequant") == std::string::npos && name.find("_ref") == std::string::npos;
}

// max |Forward(x) - (x @ Dequantize()ᵀ + bias)| / max |x @ Dequantize()ᵀ + bias|, in float32.
double RelativeForwardError(const CompressedTensorsLinear& m) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 3, m.options().in_features}).to(m.options().dtype);
  at::Tensor ref = at::matmul(x.to(at::kFloat), m.Dequantize().to(at::kFloat).t());
  if (m.bias.defined()) ref = ref + m.bias.to(at::kFloat);
  return ((m.Forward(x).to(at::kFloat) - ref).abs().max() / ref.abs().max()).item<double>();
}

// Which modules of a loaded case run a packed kernel; each forward checked against the
// Dequantize()-based reference. Prints the footprint.
std::map<std::string, std::string> Kernels(const std::string& c, const std::string& request = "") {
  const std::string config =
      request.empty() ? RequestConfig(PrequantReference(kMethod, c)) : request;
  auto model = LoadModelDir(PrequantCheckpoint(kMethod, c), config);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  std::map<std::string, std::string> out;
  const auto* q = dynamic_cast<const LinearQuantizer*>(model->quantizer.get());
  for (const auto& name : q->converted_modules()) {
    const auto* m = Module(*model, name);
    out[name] = m->kernel_name();
    if (!IsFastKernel(m->kernel_name())) continue;
    // The integer kernels round x to int16 per 32 values (measured 1.6e-5..3.1e-5).
    EXPECT_LE(RelativeForwardError(*m), kernels::kCpuKernelRelativeError)
        << c << " " << name << " " << m->kernel_name();
  }
  std::cout << c << (request.empty() ? "" : " (request " + request + ")") << ": footprint "
            << model->memory_footprint_bytes << " B, q_proj kernel "
            << out["model.layers.1.self_attn.q_proj"] << "\n";
  return out;
}

TEST(CompressedTensorsPrequantTest, WeightOnlyIntModulesRunThePackedKernels) {
  const bool on = QuantizedLinear::KernelsEnabled();
  // W4A16 pack-quantized, symmetric and asymmetric: Lut4.
  for (const char* c : {"w4a16_g128_sym", "w4a16_g32_asym"}) {
    for (const auto& [name, kernel] : Kernels(c)) {
      EXPECT_EQ(IsFastKernel(kernel), on) << c << " " << name << ": " << kernel;
    }
  }
  // Int4 groups of 64 fast; the asymmetric int8 o_proj (no offset in the int8 form) not.
  for (const auto& [name, kernel] : Kernels("mixed_ignore")) {
    const bool o_proj = name.find("o_proj") != std::string::npos;
    EXPECT_EQ(IsFastKernel(kernel), on && !o_proj) << name << ": " << kernel;
  }
  // Activation-quantized schemes keep their reference path...
  for (const char* c : {"w8a8_int_dynamic", "fp8_static"}) {
    for (const auto& [name, kernel] : Kernels(c)) {
      EXPECT_EQ(kernel, "dequantize_linear_fake_quant_input_ref") << c << " " << name;
    }
  }
  // ...unless `dequantize` turns the activations off: the symmetric int8 channel weights are
  // then weight-only, for the int8 row-wise kernel.
  for (const auto& [name, kernel] :
       Kernels("w8a8_int_dynamic", R"({"quant_method": "compressed-tensors", "dequantize": true,
                                       "config_groups": {"W4A16": ["Linear"]}})")) {
    EXPECT_EQ(IsFastKernel(kernel), on) << name << ": " << kernel;
  }
}

TEST(CompressedTensorsPrequantTest, DequantizeLoadingAttributeOverridesTheCheckpoint) {
  auto model = LoadModelDir(PrequantCheckpoint(kMethod, "w8a8_int_dynamic"),
                            R"({"quant_method": "compressed-tensors", "dequantize": true,
                                "config_groups": {"W4A16": ["Linear"]}})");
  ASSERT_TRUE(model.ok()) << model.status();
  const auto* q = Module(*model, "model.layers.0.mlp.up_proj");
  ASSERT_NE(q, nullptr);
  // The checkpoint's scheme, the request's loading attribute.
  EXPECT_TRUE(q->ct_options().dequantize);
  EXPECT_EQ(q->ct_options().format, "int-quantized");
  // Weight-only in effect: the int8 row-wise kernel (or the plain reference without kernels).
  EXPECT_NE(q->kernel_name(), "dequantize_linear_fake_quant_input_ref");
  at::Tensor x = at::randn({1, 3, 256});
  EXPECT_TRUE(at::equal(q->QuantizeInput(x), x));
  // Without it, the activations are fake-quantized per token.
  auto plain = LoadModelDir(PrequantCheckpoint(kMethod, "w8a8_int_dynamic"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  const auto* p = Module(*plain, "model.layers.0.mlp.up_proj");
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(p->ct_options().dequantize);
  EXPECT_FALSE(at::equal(p->QuantizeInput(x), x));
}

TEST(CompressedTensorsPrequantTest, ConflictingQuantMethodIsInvalidArgument) {
  auto model = LoadModelDir(PrequantCheckpoint(kMethod, "w4a16_g128_sym"),
                            R"({"quant_method": "bitsandbytes", "load_in_4bit": true})");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_NE(model.status().message().find("conflicts with the checkpoint's 'compressed-tensors'"),
            absl::string_view::npos)
      << model.status();
}

struct CorruptCase {
  const char* name;
  absl::StatusCode code;
  const char* message;
};

class CompressedTensorsCorruptTest : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(CompressedTensorsCorruptTest, FailsNamingTheTensor) {
  const CorruptCase& c = GetParam();
  const std::string dir = testing::FixturesDir() + "/prequant/compressed_tensors/corrupt/" + c.name;
  ASSERT_TRUE(std::filesystem::exists(dir)) << dir << " missing: run make_prequant_compressed_tensors.py";
  auto model = LoadModelDir(dir);
  ASSERT_FALSE(model.ok()) << c.name;
  EXPECT_EQ(model.status().code(), c.code) << model.status();
  EXPECT_NE(model.status().message().find(c.message), absl::string_view::npos) << model.status();
}

INSTANTIATE_TEST_SUITE_P(
    Corrupt, CompressedTensorsCorruptTest,
    ::testing::Values(
        CorruptCase{"bad_packed_shape", absl::StatusCode::kInvalidArgument,
                    "tensor 'model.layers.0.self_attn.q_proj.weight_packed' is Int [256, 31] but "
                    "compressed-tensors pack-quantized int4 group 128 expects Int [256, 32]"},
        CorruptCase{"missing_scale", absl::StatusCode::kInvalidArgument,
                    "model.layers.1.mlp.up_proj.weight_scale"},
        CorruptCase{"bad_weight_shape", absl::StatusCode::kDataLoss,
                    "tensor 'model.layers.2.self_attn.v_proj.weight_shape' holds [128, 512] but "
                    "the module is [128, 256]"},
        CorruptCase{"code_out_of_range", absl::StatusCode::kDataLoss,
                    "tensor 'model.layers.0.self_attn.o_proj.weight' holds "},
        CorruptCase{"zp_out_of_range", absl::StatusCode::kDataLoss,
                    "tensor 'model.layers.1.self_attn.o_proj.weight_zero_point' holds 100, "
                    "outside the int4 range [-8, 7]"}),
    [](const ::testing::TestParamInfo<CorruptCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace quantserve::quant

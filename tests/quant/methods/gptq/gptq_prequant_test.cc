// Pre-quantized GPTQ checkpoints (tests/fixtures/make_prequant_gptq.py, GPTQModel 7.7's layout
// and TorchQuantLinear arithmetic): our inference against the reference, which Linears are
// converted, corrupt copies, loading attributes, and the save -> reload round trip.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "quant/methods/gptq/gptq_linear.h"
#include "quant/methods/gptq/gptq_quantizer.h"
#include "tests/quant/prequant_testing.h"

namespace quantserve::quant {
namespace {

namespace fs = std::filesystem;
using testing::ExpectMatchesLibrary;
using testing::LoadModelDir;
using testing::PrequantCheckpoint;
using testing::PrequantReference;

c10::ScalarType FromStDtype(const std::string& s) {
  static const std::map<std::string, c10::ScalarType> kMap = {
      {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I8", at::kChar},
      {"I16", at::kShort}, {"I32", at::kInt},  {"I64", at::kLong},      {"U8", at::kByte}};
  return kMap.at(s);
}

// Every tensor of the safetensors files in `dir`, by name.
std::map<std::string, at::Tensor> ReadDir(const std::string& dir) {
  std::map<std::string, at::Tensor> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    std::ifstream f(e.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    auto header = nlohmann::json::parse(bytes.substr(8, n));
    const char* data = bytes.data() + 8 + n;
    for (auto& [name, info] : header.items()) {
      if (name == "__metadata__") continue;
      const auto begin = info["data_offsets"][0].get<int64_t>();
      const auto end = info["data_offsets"][1].get<int64_t>();
      at::Tensor t = at::empty(info["shape"].get<std::vector<int64_t>>(),
                               at::TensorOptions().dtype(FromStDtype(info["dtype"])));
      std::memcpy(t.data_ptr(), data + begin, static_cast<size_t>(end - begin));
      out[name] = t;
    }
  }
  return out;
}

const GptqQuantizer& QuantizerOf(const loader::LoadedModel& m) {
  return dynamic_cast<const GptqQuantizer&>(*m.quantizer);
}

std::string CorruptCheckpoint(const std::string& kind) {
  return testing::FixturesDir() + "/prequant/gptq/corrupt/" + kind + "/checkpoint";
}

// A packed kernel's name: not a reference path, nor the generic dequantizing fallback.
bool IsFastKernel(const std::string& name) {
  return name.find("dequant") == std::string::npos && name.find("_ref") == std::string::npos;
}

// Max |dlogprob| against GPTQModel. The reference path reproduces TorchQuantLinear (weights
// rounded to fp16: measured 0, reference.json's logprob_atol 2e-4). The packed 4-bit kernel
// computes (q - z)·s in float32 without that rounding (up to 2^-11 of each weight): measured
// 7.9e-4 (4bit_g128_sym_v1) and 9.6e-4 (4bit_g32_asym_v2_descact), same greedy tokens.
constexpr double kPackedFourBitAtol = 1.5e-3;
double Atol(const std::string& c) {
  const bool packed = c.rfind("4bit", 0) == 0 && QuantizedLinear::KernelsEnabled();
  return packed ? kPackedFourBitAtol
                : PrequantReference("gptq", c).at("logprob_atol").get<double>();
}

void ExpectCase(const std::string& c) {
  const nlohmann::json ref = PrequantReference("gptq", c);
  auto m = LoadModelDir(PrequantCheckpoint("gptq", c), "", ref.at("dtype").get<std::string>());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(QuantizerOf(*m).converted_modules(),
            ref.at("quantized_modules").get<std::vector<std::string>>());
  // 4-bit modules (act-order ones too: their groups are whole) run the packed Lut4 kernel on
  // the CPU; 2/3/8-bit keep the reference.
  const bool fits = c.rfind("4bit", 0) == 0 && QuantizedLinear::KernelsEnabled();
  std::string kernel;
  for (const auto& name : QuantizerOf(*m).converted_modules()) {
    kernel = QuantizerOf(*m).converted_module(name)->kernel_name();
    EXPECT_EQ(IsFastKernel(kernel), fits) << c << " " << name << ": " << kernel;
  }
  const double diff = ExpectMatchesLibrary(*m, ref, Atol(c));
  std::cout << "gptq/" << c << ": max |dlogprob| " << diff << " (atol " << Atol(c)
            << ", reference ppl " << ref.at("perplexity") << "), kernel " << kernel
            << ", footprint " << m->memory_footprint_bytes << " B\n";
}

TEST(GptqPrequantTest, FourBitG128SymV1MatchesLibrary) { ExpectCase("4bit_g128_sym_v1"); }
TEST(GptqPrequantTest, FourBitG32AsymV2DescActMatchesLibrary) {
  ExpectCase("4bit_g32_asym_v2_descact");
}
TEST(GptqPrequantTest, EightBitPerChannelSubsetMatchesLibrary) {
  // modules_in_block_to_quantize: only q/k/v/down are GPTQ; o/gate/up stay float.
  ExpectCase("8bit_gm1_sym_v1_subset");
}
TEST(GptqPrequantTest, ThreeBitG64AsymV1MatchesLibrary) { ExpectCase("3bit_g64_asym_v1"); }
TEST(GptqPrequantTest, TwoBitG64AsymV1MatchesLibrary) { ExpectCase("2bit_g64_asym_v1"); }

TEST(GptqPrequantTest, DescActGIdxIsAPermutationAndKeptAsLoaded) {
  const std::string c = "4bit_g32_asym_v2_descact";
  auto m = LoadModelDir(PrequantCheckpoint("gptq", c));
  ASSERT_TRUE(m.ok()) << m.status();
  auto st = ReadDir(PrequantCheckpoint("gptq", c));
  auto* q = dynamic_cast<GptqLinear*>(QuantizerOf(*m).converted_module("model.layers.2.mlp.up_proj"));
  ASSERT_NE(q, nullptr);
  const at::Tensor g = st.at("model.layers.2.mlp.up_proj.g_idx");
  EXPECT_FALSE(at::equal(g, at::arange(256, at::kInt).floor_divide(32)));  // permuted
  EXPECT_TRUE(at::equal(q->g_idx, g));
  EXPECT_TRUE(at::equal(q->Resident(q->qweight), st.at("model.layers.2.mlp.up_proj.qweight")));
  EXPECT_EQ(q->groups(), 8);
}

TEST(GptqPrequantTest, MissingGIdxDefaultsAndMatchesTheFullCheckpoint) {
  auto m = LoadModelDir(CorruptCheckpoint("no_g_idx"));
  ASSERT_TRUE(m.ok()) << m.status();
  ExpectMatchesLibrary(*m, PrequantReference("gptq", "4bit_g128_sym_v1"),
                       Atol("4bit_g128_sym_v1"));
}

TEST(GptqPrequantTest, WrongPackedShapeIsInvalidArgumentNamingTheTensor) {
  auto m = LoadModelDir(CorruptCheckpoint("qweight_shape"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find("tensor 'model.layers.0.self_attn.q_proj.qweight' is Int "
                                      "[31, 256] but gptq 4-bit group_size 128 expects Int "
                                      "[32, 256]"),
            absl::string_view::npos)
      << m.status();
}

TEST(GptqPrequantTest, MissingScalesIsInvalidArgumentNamingTheTensor) {
  auto m = LoadModelDir(CorruptCheckpoint("missing_scales"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find("model.layers.1.mlp.down_proj.scales"),
            absl::string_view::npos)
      << m.status();
}

TEST(GptqPrequantTest, GIdxOutOfRangeIsDataLossNamingTheTensor) {
  auto m = LoadModelDir(CorruptCheckpoint("g_idx_range"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << m.status();
  EXPECT_NE(m.status().message().find(
                "tensor 'model.layers.0.mlp.up_proj.g_idx' has group 2 at row 5, outside [0, 2)"),
            absl::string_view::npos)
      << m.status();
}

TEST(GptqPrequantTest, RequestOverridesLoadingAttributesOnly) {
  const std::string c = "4bit_g128_sym_v1";
  // bits/group_size of the request are ignored (transformers keeps the checkpoint's);
  // backend and max_input_length are loading attributes and win.
  auto m = LoadModelDir(PrequantCheckpoint("gptq", c),
                        R"({"quant_method": "gptq", "bits": 8, "group_size": 32,
                            "backend": "TORCH", "max_input_length": 4096})");
  ASSERT_TRUE(m.ok()) << m.status();
  auto j = nlohmann::json::parse(m->quantizer->NormalizedConfigJson());
  EXPECT_EQ(j["backend"], "torch");
  EXPECT_EQ(j["max_input_length"], 4096);
  EXPECT_EQ(j["bits"], 4);
  EXPECT_EQ(j["group_size"], 128);
  ExpectMatchesLibrary(*m, PrequantReference("gptq", c), Atol(c));
}

TEST(GptqPrequantTest, ConflictingQuantMethodIsInvalidArgument) {
  auto m = LoadModelDir(PrequantCheckpoint("gptq", "4bit_g128_sym_v1"),
                        R"({"quant_method": "bitsandbytes", "load_in_4bit": true})");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
}

void ExpectRoundTrip(const std::string& c) {
  const std::string src = PrequantCheckpoint("gptq", c);
  auto m = LoadModelDir(src);
  ASSERT_TRUE(m.ok()) << m.status();
  auto reloaded = testing::SaveAndReload(*m, src, "gptq_" + c);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  // The saved tensors are the library's checkpoint byte for byte (same names and dtypes).
  // SaveAndReload wrote into testing::TempDir("gptq_" + c) (TempDir itself would wipe it).
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string saved_dir = (fs::path(base ? base : "/tmp") /
                                 ("qs_gptq_" + c + "_" + std::to_string(::getpid())))
                                    .string();
  auto theirs = ReadDir(src);
  auto ours = ReadDir(saved_dir);
  EXPECT_EQ(ours.size(), theirs.size());
  for (const auto& [name, t] : theirs) {
    auto it = ours.find(name);
    ASSERT_NE(it, ours.end()) << name;
    EXPECT_EQ(it->second.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(it->second, t)) << name;
  }
  auto config = testing::ReadJsonFile(saved_dir + "/config.json")["quantization_config"];
  auto source = testing::ReadJsonFile(src + "/config.json")["quantization_config"];
  for (const char* key : {"bits", "group_size", "sym", "desc_act", "checkpoint_format"}) {
    EXPECT_EQ(config[key], source[key]) << key;
  }
  const nlohmann::json ref = PrequantReference("gptq", c);
  const double before = ExpectMatchesLibrary(*m, ref, Atol(c));
  const double after = ExpectMatchesLibrary(*reloaded, ref, Atol(c));
  EXPECT_EQ(before, after);
}

TEST(GptqPrequantTest, SaveAndReloadIsIdenticalV1) { ExpectRoundTrip("4bit_g128_sym_v1"); }
TEST(GptqPrequantTest, SaveAndReloadIsIdenticalV2DescAct) {
  ExpectRoundTrip("4bit_g32_asym_v2_descact");
}
TEST(GptqPrequantTest, SaveAndReloadIsIdenticalThreeBit) { ExpectRoundTrip("3bit_g64_asym_v1"); }

}  // namespace
}  // namespace quantserve::quant

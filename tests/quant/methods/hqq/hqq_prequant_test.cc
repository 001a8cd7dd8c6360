// HQQ checkpoints pre-quantized by hqq 0.2.8.post1 and written by transformers 5.23's
// save_pretrained (tests/fixtures/make_prequant_hqq.py): loaded as they are and compared with
// hqq's own HQQLinear.load_state_dict + PYTORCH forward; quantize at load -> SaveModel writes
// the same tensors, byte for byte, as save_pretrained; pre-quantized load -> save -> reload is
// bit-identical; corrupt copies give the right code naming the tensor; a request config is
// ignored (HqqConfig has no loading attributes) unless it names another method.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/env.h"
#include "loader/model_saver.h"
#include "quant/methods/hqq/hqq_linear.h"
#include "quant/methods/hqq/hqq_quantizer.h"
#include "tests/quant/prequant_testing.h"

namespace quantserve::quant {
namespace {

using testing::LoadModelDir;
using testing::PrequantCaseDir;
using testing::PrequantCheckpoint;
using testing::PrequantReference;
using testing::TempDir;

constexpr char kMethod[] = "hqq";
constexpr char kQProj[] = "model.layers.0.self_attn.q_proj";

using testing::BitEqual;
using testing::ExpectSameTensors;
using testing::ParamState;
using testing::ReadTensors;
using testing::Sorted;
using testing::TensorMap;
using testing::Windows;

class HqqPrequantTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HqqPrequantTest, MatchesHqqLoadStateDict) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, GetParam()), "", ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<HqqQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(Sorted(q->converted_modules()),
            ref["quantized_modules"].get<std::vector<std::string>>());
  // The serialized layout only: no float `weight` slot on a converted module.
  for (const auto& p : loaded->causal_lm->NamedParameters()) {
    EXPECT_FALSE(q->converted_module(p.name.substr(0, p.name.rfind('.'))) != nullptr &&
                 p.name.substr(p.name.rfind('.') + 1) == "weight")
        << p.name;
  }
  // The packed CPU kernel of 4-bit axis-1 modules computes (q - zero)·scale in float32; in
  // bfloat16 that skips the bfloat16 rounding of each weight hqq does: measured 0.058 against
  // the reference path's 0.02 tolerance (float32 cases stay within theirs).
  double atol = ref["logprob_atol"].get<double>();
  if (ref["dtype"] == "bfloat16" && QuantizedLinear::KernelsEnabled()) atol = 8e-2;
  const double diff = testing::ExpectMatchesLibrary(*loaded, ref, atol);
  std::cout << "[hqq prequant] " << GetParam() << ": max |dlogprob| vs hqq " << diff << " (atol "
            << atol << "), load " << loaded->seconds << " s\n";
}

// Quantize the default model at load with the case's config and SaveModel it: the saved
// tensors and config are exactly what save_pretrained wrote for the fixture, and the reloaded
// (pre-quantized) model holds the same state and gives identical logprobs.
TEST_P(HqqPrequantTest, QuantizeAtLoadSavesWhatSavePretrainedWrites) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  const std::string dtype = ref["dtype"];
  auto quantized = testing::LoadDefaultModel(ref["quantization_config"].dump(), dtype);
  ASSERT_TRUE(quantized.ok()) << quantized.status();

  loader::SaveModelOptions o;
  o.output_dir = TempDir("hqq_save_" + GetParam());
  auto saved = loader::SaveModel(*quantized, testing::DefaultModelDir(), o);
  ASSERT_TRUE(saved.ok()) << saved.status();
  ExpectSameTensors(ReadTensors(o.output_dir + "/model.safetensors"),
                    ReadTensors(PrequantCheckpoint(kMethod, GetParam()) + "/model.safetensors"),
                    "SaveModel vs save_pretrained");
  const nlohmann::json ours = testing::ReadJsonFile(o.output_dir + "/config.json");
  const nlohmann::json theirs =
      testing::ReadJsonFile(PrequantCheckpoint(kMethod, GetParam()) + "/config.json");
  EXPECT_EQ(ours["quantization_config"], theirs["quantization_config"]);

  auto reloaded = LoadModelDir(o.output_dir, "", dtype);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  // The float input slot aliases W_q while quantizing at load; it is not saved.
  auto* q = dynamic_cast<LinearQuantizer*>(quantized->quantizer.get());
  ASSERT_NE(q, nullptr);
  TensorMap before;
  for (const auto& [name, t] : ParamState(*quantized->causal_lm)) {
    const auto dot = name.rfind('.');
    if (name.substr(dot + 1) == "weight" && q->converted_module(name.substr(0, dot)) != nullptr) {
      continue;
    }
    before.emplace(name, t);
  }
  ExpectSameTensors(ParamState(*reloaded->causal_lm), before, "reloaded vs quantized at load");
  at::Tensor a = testing::TargetLogprobs(*quantized->causal_lm, Windows(ref));
  at::Tensor b = testing::TargetLogprobs(*reloaded->causal_lm, Windows(ref));
  EXPECT_TRUE(BitEqual(a, b)) << "max diff " << (a - b).abs().max().item<double>();
  std::cout << "[hqq prequant] " << GetParam() << ": quantize at load " << quantized->seconds
            << " s, reload saved " << reloaded->seconds << " s, save " << saved->seconds << " s ("
            << saved->tensor_bytes << " bytes)\n";
}

// Pre-quantized load -> SaveAndReload: every tensor comes back bit for bit, same logprobs.
TEST_P(HqqPrequantTest, PrequantizedSaveAndReload) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  const std::string dir = PrequantCheckpoint(kMethod, GetParam());
  auto loaded = LoadModelDir(dir, "", ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto reloaded = testing::SaveAndReload(*loaded, dir, "hqq_resave_" + GetParam());
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  ExpectSameTensors(ParamState(*reloaded->causal_lm), ParamState(*loaded->causal_lm), "reloaded");
  auto state = loaded->quantizer->SerializedState(*loaded->causal_lm);
  ASSERT_TRUE(state.ok()) << state.status();
  TensorMap serialized(state->begin(), state->end());
  ExpectSameTensors(serialized, ReadTensors(dir + "/model.safetensors"), "SerializedState");
  at::Tensor a = testing::TargetLogprobs(*loaded->causal_lm, Windows(ref));
  at::Tensor b = testing::TargetLogprobs(*reloaded->causal_lm, Windows(ref));
  EXPECT_TRUE(BitEqual(a, b)) << "max diff " << (a - b).abs().max().item<double>();
}

INSTANTIATE_TEST_SUITE_P(Cases, HqqPrequantTest,
                         ::testing::Values("4bit_g64_axis1", "2bit_g16", "3bit_g64",
                                           "4bit_view_as_float", "4bit_g64_bfloat16"));

// The checkpoint's config decides; a request's hqq fields are not loading attributes.
TEST(HqqPrequantRequestTest, RequestConfigIsIgnored) {
  const nlohmann::json ref = PrequantReference(kMethod, "4bit_g64_axis1");
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, "4bit_g64_axis1"),
                             R"({"quant_method": "hqq", "nbits": 2, "group_size": 16})", "float32");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<HqqQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(q, nullptr);
  ASSERT_TRUE(q->config().quant_config.has_value());
  EXPECT_EQ(q->config().quant_config->nbits, 4);
  testing::ExpectMatchesLibrary(*loaded, ref);
}

TEST(HqqPrequantRequestTest, OtherMethodIsInvalid) {
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, "4bit_g64_axis1"),
                             R"({"quant_method": "eetq", "weights": "int8"})", "float32");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
  EXPECT_NE(loaded.status().message().find("conflicts"), std::string::npos) << loaded.status();
}

struct Corruption {
  const char* dir;          // corrupt/<dir> of 4bit_g64_axis1 (make_prequant_hqq.CORRUPTIONS)
  absl::StatusCode code;
  const char* tensor;       // local name under kQProj the message must name
};

class HqqCorruptTest : public ::testing::TestWithParam<Corruption> {};

TEST_P(HqqCorruptTest, NamesTheTensor) {
  const Corruption& c = GetParam();
  const std::string dir = PrequantCaseDir(kMethod, "4bit_g64_axis1") + "/corrupt/" + c.dir;
  ASSERT_TRUE(std::filesystem::exists(dir + "/model.safetensors")) << dir;
  auto loaded = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(loaded.ok()) << c.dir;
  EXPECT_EQ(loaded.status().code(), c.code) << loaded.status();
  const std::string name = std::string(kQProj) + "." + c.tensor;
  EXPECT_NE(loaded.status().message().find(name), std::string::npos) << loaded.status();
  std::cout << "[hqq corrupt] " << c.dir << ": " << loaded.status() << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Corrupt, HqqCorruptTest,
    ::testing::Values(Corruption{"wq_wrong_shape", absl::StatusCode::kInvalidArgument, "W_q"},
                      Corruption{"missing_scale", absl::StatusCode::kInvalidArgument, "scale"},
                      Corruption{"nbits_contradicts_config", absl::StatusCode::kDataLoss, "nbits"},
                      Corruption{"packing_contradicts_config", absl::StatusCode::kDataLoss,
                                 "packing"}),
    [](const ::testing::TestParamInfo<Corruption>& i) { return std::string(i.param.dir); });

}  // namespace
}  // namespace quantserve::quant

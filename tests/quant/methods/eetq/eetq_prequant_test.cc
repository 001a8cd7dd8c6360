// EETQ checkpoints written by transformers 5.23 (EetqHfQuantizer + save_pretrained; EETQ's CUDA
// kernels replaced by their formulas and a Python port of the SM80 weight preprocessing,
// tests/fixtures/make_prequant_eetq.py): loaded through eetq_layout's un-preprocessing and
// compared with transformers' pre-quantized load; quantize at load -> SaveModel writes the
// CUTLASS byte order transformers wrote, byte for byte; pre-quantized load -> save -> reload
// is bit-identical; corrupt copies give the right code naming the tensor.

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
#include "quant/methods/eetq/eetq_layout.h"
#include "quant/methods/eetq/eetq_linear.h"
#include "quant/methods/eetq/eetq_quantizer.h"
#include "tests/quant/prequant_testing.h"

namespace quantserve::quant {
namespace {

using testing::LoadModelDir;
using testing::PrequantCaseDir;
using testing::PrequantCheckpoint;
using testing::PrequantReference;
using testing::TempDir;

constexpr char kMethod[] = "eetq";
constexpr char kQProj[] = "model.layers.0.self_attn.q_proj";

using testing::BitEqual;
using testing::ExpectSameTensors;
using testing::ParamState;
using testing::ReadTensors;
using testing::Sorted;
using testing::TensorMap;
using testing::Windows;

TEST(EetqPrequantTest, MatchesTransformersPrequantizedLoad) {
  const nlohmann::json ref = PrequantReference(kMethod, "default");
  const std::string dir = PrequantCheckpoint(kMethod, "default");
  auto loaded = LoadModelDir(dir, "", ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<EetqQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(Sorted(q->converted_modules()),
            ref["quantized_modules"].get<std::vector<std::string>>());
  // In memory the plain Q: the checkpoint's bytes un-preprocessed once.
  auto* linear = dynamic_cast<EetqLinear*>(q->converted_module(kQProj));
  ASSERT_NE(linear, nullptr);
  const TensorMap checkpoint = ReadTensors(dir + "/model.safetensors");
  auto plain = EetqUnpreprocessSm80(checkpoint.at(std::string(kQProj) + ".weight"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(BitEqual(linear->Resident(linear->weight), *plain));
  const double diff = testing::ExpectMatchesLibrary(*loaded, ref);
  std::cout << "[eetq prequant] default: max |dlogprob| vs transformers " << diff << " (atol "
            << ref["logprob_atol"] << "), load " << loaded->seconds << " s\n";
}

// Pre-quantized load -> SaveAndReload: every tensor comes back bit for bit, same logprobs;
// SerializedState is the checkpoint's tensors (preprocessed again).
TEST(EetqPrequantTest, PrequantizedSaveAndReload) {
  const nlohmann::json ref = PrequantReference(kMethod, "default");
  const std::string dir = PrequantCheckpoint(kMethod, "default");
  auto loaded = LoadModelDir(dir, "", ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto state = loaded->quantizer->SerializedState(*loaded->causal_lm);
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectSameTensors(TensorMap(state->begin(), state->end()),
                    ReadTensors(dir + "/model.safetensors"), "SerializedState");
  auto reloaded = testing::SaveAndReload(*loaded, dir, "eetq_resave");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  ExpectSameTensors(ParamState(*reloaded->causal_lm), ParamState(*loaded->causal_lm), "reloaded");
  at::Tensor a = testing::TargetLogprobs(*loaded->causal_lm, Windows(ref));
  at::Tensor b = testing::TargetLogprobs(*reloaded->causal_lm, Windows(ref));
  EXPECT_TRUE(BitEqual(a, b)) << "max diff " << (a - b).abs().max().item<double>();
}

// Quantize the default model at load (float16) and SaveModel it: the saved tensors and config
// are what transformers' save_pretrained wrote; the reloaded model has the same state and
// logprobs.
TEST(EetqSaveTest, QuantizeAtLoadSavesWhatSavePretrainedWrites) {
  const nlohmann::json ref = PrequantReference(kMethod, "default");
  auto quantized = testing::LoadDefaultModel(R"({"quant_method": "eetq"})", ref["dtype"]);
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  loader::SaveModelOptions o;
  o.output_dir = TempDir("eetq_save");
  auto saved = loader::SaveModel(*quantized, testing::DefaultModelDir(), o);
  ASSERT_TRUE(saved.ok()) << saved.status();
  ExpectSameTensors(ReadTensors(o.output_dir + "/model.safetensors"),
                    ReadTensors(PrequantCheckpoint(kMethod, "default") + "/model.safetensors"),
                    "SaveModel vs save_pretrained");
  EXPECT_EQ(testing::ReadJsonFile(o.output_dir + "/config.json")["quantization_config"],
            testing::ReadJsonFile(PrequantCheckpoint(kMethod, "default") + "/config.json")
                ["quantization_config"]);
  auto reloaded = LoadModelDir(o.output_dir, "", ref["dtype"]);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  ExpectSameTensors(ParamState(*reloaded->causal_lm), ParamState(*quantized->causal_lm),
                    "reloaded vs quantized at load");
  at::Tensor a = testing::TargetLogprobs(*quantized->causal_lm, Windows(ref));
  at::Tensor b = testing::TargetLogprobs(*reloaded->causal_lm, Windows(ref));
  EXPECT_TRUE(BitEqual(a, b)) << "max diff " << (a - b).abs().max().item<double>();
}

// EetqConfig has no loading attributes: a request's fields are ignored, another method is not.
TEST(EetqPrequantRequestTest, RequestConfigIsIgnored) {
  const nlohmann::json ref = PrequantReference(kMethod, "default");
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, "default"),
                             R"({"quant_method": "eetq", "modules_to_not_convert": ["v_proj"]})",
                             ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<EetqQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(Sorted(q->converted_modules()),
            ref["quantized_modules"].get<std::vector<std::string>>());
  testing::ExpectMatchesLibrary(*loaded, ref);
}

TEST(EetqPrequantRequestTest, OtherMethodIsInvalid) {
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, "default"),
                             R"({"quant_method": "fbgemm_fp8"})", "float16");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
  EXPECT_NE(loaded.status().message().find("conflicts"), std::string::npos) << loaded.status();
}

struct Corruption {
  const char* dir;  // corrupt/<dir> of "default" (make_prequant_eetq.CORRUPTIONS)
  absl::StatusCode code;
  const char* tensor;  // local name under kQProj the message must name
};

class EetqCorruptTest : public ::testing::TestWithParam<Corruption> {};

TEST_P(EetqCorruptTest, NamesTheTensor) {
  const Corruption& c = GetParam();
  const std::string dir = PrequantCaseDir(kMethod, "default") + "/corrupt/" + c.dir;
  ASSERT_TRUE(std::filesystem::exists(dir + "/model.safetensors")) << dir;
  auto loaded = LoadModelDir(dir, "", "float16");
  ASSERT_FALSE(loaded.ok()) << c.dir;
  EXPECT_EQ(loaded.status().code(), c.code) << loaded.status();
  const std::string name = std::string(kQProj) + "." + c.tensor;
  EXPECT_NE(loaded.status().message().find(name), std::string::npos) << loaded.status();
  std::cout << "[eetq corrupt] " << c.dir << ": " << loaded.status() << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Corrupt, EetqCorruptTest,
    ::testing::Values(
        Corruption{"missing_weight_scales", absl::StatusCode::kInvalidArgument, "weight_scales"},
        Corruption{"weight_wrong_shape", absl::StatusCode::kInvalidArgument, "weight"},
        Corruption{"weight_scales_wrong_dtype", absl::StatusCode::kInvalidArgument,
                   "weight_scales"},
        Corruption{"weight_scales_nan", absl::StatusCode::kDataLoss, "weight_scales"}),
    [](const ::testing::TestParamInfo<Corruption>& i) { return std::string(i.param.dir); });

}  // namespace
}  // namespace quantserve::quant

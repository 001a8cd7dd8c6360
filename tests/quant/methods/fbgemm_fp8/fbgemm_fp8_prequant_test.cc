// FBGEMM FP8 checkpoints written by transformers 5.23 (FbgemmFp8HfQuantizer + save_pretrained;
// fbgemm-gpu's two CUDA ops replaced by their formulas; make_prequant_fbgemm_fp8.py):
// loaded as they are and compared with transformers' pre-quantized load (formula forward);
// the activation_scale_ub loading attribute of a request overrides the checkpoint's; quantize
// at load -> SaveModel writes what save_pretrained wrote, byte for byte; pre-quantized load ->
// save -> reload is bit-identical; corrupt copies give the right code naming the tensor.

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
#include "quant/methods/fbgemm_fp8/fbgemm_fp8_linear.h"
#include "quant/methods/fbgemm_fp8/fbgemm_fp8_quantizer.h"
#include "tests/quant/prequant_testing.h"

namespace quantserve::quant {
namespace {

using testing::LoadModelDir;
using testing::PrequantCaseDir;
using testing::PrequantCheckpoint;
using testing::PrequantReference;
using testing::TempDir;

constexpr char kMethod[] = "fbgemm_fp8";
constexpr char kQProj[] = "model.layers.0.self_attn.q_proj";

using testing::BitEqual;
using testing::ExpectSameTensors;
using testing::ParamState;
using testing::ReadTensors;
using testing::Sorted;
using testing::TensorMap;
using testing::Windows;

// The checkpoint's own config, and a request overriding activation_scale_ub (the case's
// request_config) as transformers' merge_quantization_configs does.
class FbgemmPrequantTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FbgemmPrequantTest, MatchesTransformersPrequantizedLoad) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  const std::string request =
      ref["request_config"].is_null() ? "" : ref["request_config"].dump();
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, GetParam()), request, ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<FbgemmFp8Quantizer*>(loaded->quantizer.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(Sorted(q->converted_modules()),
            ref["quantized_modules"].get<std::vector<std::string>>());
  const double ub = request.empty() ? 1200.0
                                    : ref["request_config"]["activation_scale_ub"].get<double>();
  EXPECT_EQ(q->config().activation_scale_ub, ub);
  auto* linear = dynamic_cast<FbgemmFp8Linear*>(q->converted_module(kQProj));
  ASSERT_NE(linear, nullptr);
  EXPECT_EQ(linear->activation_scale_ub(), static_cast<float>(ub));
  EXPECT_EQ(linear->weight.scalar_type(), at::kFloat8_e4m3fn);
  const double diff = testing::ExpectMatchesLibrary(*loaded, ref);
  std::cout << "[fbgemm_fp8 prequant] " << GetParam() << ": max |dlogprob| vs transformers "
            << diff << " (atol " << ref["logprob_atol"] << "), load " << loaded->seconds << " s\n";
}

// Pre-quantized load -> SaveAndReload: every tensor comes back bit for bit, same logprobs;
// SerializedState is the checkpoint's tensors.
TEST_P(FbgemmPrequantTest, PrequantizedSaveAndReload) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  const std::string dir = PrequantCheckpoint(kMethod, GetParam());
  auto loaded = LoadModelDir(dir, "", ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto state = loaded->quantizer->SerializedState(*loaded->causal_lm);
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectSameTensors(TensorMap(state->begin(), state->end()),
                    ReadTensors(dir + "/model.safetensors"), "SerializedState");
  auto reloaded = testing::SaveAndReload(*loaded, dir, "fbgemm_resave_" + GetParam());
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  ExpectSameTensors(ParamState(*reloaded->causal_lm), ParamState(*loaded->causal_lm), "reloaded");
  at::Tensor a = testing::TargetLogprobs(*loaded->causal_lm, Windows(ref));
  at::Tensor b = testing::TargetLogprobs(*reloaded->causal_lm, Windows(ref));
  EXPECT_TRUE(BitEqual(a, b)) << "max diff " << (a - b).abs().max().item<double>();
}

INSTANTIATE_TEST_SUITE_P(Cases, FbgemmPrequantTest,
                         ::testing::Values("default", "scale_ub_override"));

// Quantize the default model at load and SaveModel it: the saved tensors and config are what
// transformers' save_pretrained wrote; the reloaded model has the same state and logprobs.
TEST(FbgemmSaveTest, QuantizeAtLoadSavesWhatSavePretrainedWrites) {
  const nlohmann::json ref = PrequantReference(kMethod, "default");
  auto quantized = testing::LoadDefaultModel(R"({"quant_method": "fbgemm_fp8"})", "bfloat16");
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  loader::SaveModelOptions o;
  o.output_dir = TempDir("fbgemm_save");
  auto saved = loader::SaveModel(*quantized, testing::DefaultModelDir(), o);
  ASSERT_TRUE(saved.ok()) << saved.status();
  ExpectSameTensors(ReadTensors(o.output_dir + "/model.safetensors"),
                    ReadTensors(PrequantCheckpoint(kMethod, "default") + "/model.safetensors"),
                    "SaveModel vs save_pretrained");
  EXPECT_EQ(testing::ReadJsonFile(o.output_dir + "/config.json")["quantization_config"],
            testing::ReadJsonFile(PrequantCheckpoint(kMethod, "default") + "/config.json")
                ["quantization_config"]);
  auto reloaded = LoadModelDir(o.output_dir, "", "bfloat16");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  ExpectSameTensors(ParamState(*reloaded->causal_lm), ParamState(*quantized->causal_lm),
                    "reloaded vs quantized at load");
  at::Tensor a = testing::TargetLogprobs(*quantized->causal_lm, Windows(ref));
  at::Tensor b = testing::TargetLogprobs(*reloaded->causal_lm, Windows(ref));
  EXPECT_TRUE(BitEqual(a, b)) << "max diff " << (a - b).abs().max().item<double>();
}

TEST(FbgemmPrequantRequestTest, OtherMethodIsInvalid) {
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, "default"),
                             R"({"quant_method": "hqq", "nbits": 4})", "bfloat16");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
  EXPECT_NE(loaded.status().message().find("conflicts"), std::string::npos) << loaded.status();
}

struct Corruption {
  const char* dir;  // corrupt/<dir> of "default" (make_prequant_fbgemm_fp8.CORRUPTIONS)
  absl::StatusCode code;
  const char* tensor;  // local name under kQProj the message must name
};

class FbgemmCorruptTest : public ::testing::TestWithParam<Corruption> {};

TEST_P(FbgemmCorruptTest, NamesTheTensor) {
  const Corruption& c = GetParam();
  const std::string dir = PrequantCaseDir(kMethod, "default") + "/corrupt/" + c.dir;
  ASSERT_TRUE(std::filesystem::exists(dir + "/model.safetensors")) << dir;
  auto loaded = LoadModelDir(dir, "", "bfloat16");
  ASSERT_FALSE(loaded.ok()) << c.dir;
  EXPECT_EQ(loaded.status().code(), c.code) << loaded.status();
  const std::string name = std::string(kQProj) + "." + c.tensor;
  EXPECT_NE(loaded.status().message().find(name), std::string::npos) << loaded.status();
  std::cout << "[fbgemm_fp8 corrupt] " << c.dir << ": " << loaded.status() << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Corrupt, FbgemmCorruptTest,
    ::testing::Values(
        Corruption{"missing_weight_scale", absl::StatusCode::kInvalidArgument, "weight_scale"},
        Corruption{"weight_wrong_dtype", absl::StatusCode::kInvalidArgument, "weight"},
        Corruption{"weight_scale_wrong_shape", absl::StatusCode::kInvalidArgument,
                   "weight_scale"},
        Corruption{"weight_scale_negative", absl::StatusCode::kDataLoss, "weight_scale"},
        Corruption{"weight_nan", absl::StatusCode::kDataLoss, "weight"}),
    [](const ::testing::TestParamInfo<Corruption>& i) { return std::string(i.param.dir); });

}  // namespace
}  // namespace quantserve::quant

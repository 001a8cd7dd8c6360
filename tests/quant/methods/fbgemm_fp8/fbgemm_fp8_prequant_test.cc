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

using TensorMap = std::map<std::string, at::Tensor>;

TensorMap ReadTensors(const std::string& path) {
  auto t = loader::ReadSafetensorsFile(common::Env::Default(), path);
  EXPECT_TRUE(t.ok()) << path << ": " << t.status();
  return t.ok() ? *t : TensorMap{};
}

bool BitEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor x = a.contiguous().cpu(), y = b.contiguous().cpu();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

// The fixtures list module names sorted.
std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TensorMap State(const models::Module& root) {
  TensorMap out;
  for (const auto& p : root.NamedParameters()) out.emplace(p.name, *p.slot.tensor);
  return out;
}

// Same names, and every tensor bit for bit.
void ExpectSameTensors(const TensorMap& ours, const TensorMap& theirs, const std::string& what) {
  std::vector<std::string> a, b;
  for (const auto& [n, t] : ours) a.push_back(n);
  for (const auto& [n, t] : theirs) b.push_back(n);
  EXPECT_EQ(a, b) << what;
  int differ = 0;
  for (const auto& [n, t] : theirs) {
    auto it = ours.find(n);
    if (it == ours.end() || BitEqual(it->second, t)) continue;
    if (++differ <= 5) {
      ADD_FAILURE() << what << ": " << n << " differs: ours " << it->second.scalar_type() << " "
                    << it->second.sizes() << ", theirs " << t.scalar_type() << " " << t.sizes();
    }
  }
  EXPECT_EQ(differ, 0) << what;
}

nlohmann::json Windows(const nlohmann::json& ref) {
  nlohmann::json all = testing::QuantWindows()["windows"], used = nlohmann::json::array();
  for (int i = 0; i < ref["n_windows"].get<int>(); ++i) used.push_back(all[i]);
  return used;
}

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
  ExpectSameTensors(State(*reloaded->causal_lm), State(*loaded->causal_lm), "reloaded");
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
  ExpectSameTensors(State(*reloaded->causal_lm), State(*quantized->causal_lm),
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

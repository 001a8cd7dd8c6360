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
  EXPECT_TRUE(BitEqual(linear->weight, *plain));
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
  ExpectSameTensors(State(*reloaded->causal_lm), State(*loaded->causal_lm), "reloaded");
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
  ExpectSameTensors(State(*reloaded->causal_lm), State(*quantized->causal_lm),
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

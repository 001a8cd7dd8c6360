// Checkpoints pre-quantized by bitsandbytes 0.50.2 through transformers 5.23's save_pretrained
// (tests/fixtures/make_prequant_bitsandbytes.py): loaded as they are, against transformers'
// own pre-quantized loading and bnb's CPU inference; quantize at load -> SaveModel writes the
// same tensors, byte for byte, as save_pretrained; corrupt copies give the right error naming
// the tensor; a request config on a pre-quantized checkpoint is ignored (no loading
// attributes) unless it names another method.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/env.h"
#include "loader/model_saver.h"
#include "quant/methods/bitsandbytes/bitsandbytes_linear.h"
#include "quant/methods/bitsandbytes/bitsandbytes_quantizer.h"
#include "tests/quant/prequant_testing.h"
#include "quant/quantized_linear.h"

namespace quantserve::quant {
namespace {

using testing::LoadModelDir;
using testing::PrequantCheckpoint;
using testing::PrequantReference;
using testing::TempDir;

constexpr char kMethod[] = "bitsandbytes";
constexpr char kQProj[] = "model.layers.0.self_attn.q_proj";

std::vector<std::string> Cases() {
  return {"int8", "nf4", "fp4", "nf4_double_bf16", "fp4_storage_bf16", "nf4_blocksize128"};
}

using testing::BitEqual;
using testing::ReadTensors;
using testing::TensorMap;

std::string CorruptCopy(const std::string& name, const std::string& tag,
                        const std::function<void(TensorMap&)>& edit) {
  return testing::CorruptCopy(kMethod, name, tag, edit);
}

at::Tensor Bytes(const std::string& s) {
  return at::tensor(std::vector<uint8_t>(s.begin(), s.end()), at::kByte);
}

std::string JsonOf(const at::Tensor& bytes) {
  at::Tensor c = bytes.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel());
}

class BnbPrequantTest : public ::testing::TestWithParam<std::string> {};
// The cases a BitsAndBytesConfig can make at load (not nf4_blocksize128).
class BnbRoundTripTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BnbPrequantTest, MatchesTransformersPrequantizedLoad) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, GetParam()), "", ref["dtype"]);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<BitsAndBytesQuantizer*>(loaded->quantizer.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->converted_modules().size(), 28u);
  const double diff = testing::ExpectMatchesLibrary(*loaded, ref);
  std::cout << "[bnb prequant] " << GetParam() << ": max |dlogprob| vs library " << diff
            << " (atol " << ref["logprob_atol"] << "), load " << loaded->seconds << " s\n";
}

// Quantize the default model at load with the case's config, SaveModel it: the saved tensors
// are exactly what transformers' save_pretrained wrote for the fixture (same names, same
// bytes), and the reloaded (pre-quantized) model gives identical logprobs.
TEST_P(BnbRoundTripTest, QuantizeAtLoadSavesWhatSavePretrainedWrites) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  auto quantized = testing::LoadDefaultModel(ref["quantization_config"].dump(), "float32");
  ASSERT_TRUE(quantized.ok()) << quantized.status();

  loader::SaveModelOptions o;
  o.output_dir = TempDir("bnb_save_" + GetParam());
  auto saved = loader::SaveModel(*quantized, testing::DefaultModelDir(), o);
  ASSERT_TRUE(saved.ok()) << saved.status();

  const TensorMap ours = ReadTensors(o.output_dir + "/model.safetensors");
  const TensorMap theirs = ReadTensors(PrequantCheckpoint(kMethod, GetParam()) + "/model.safetensors");
  std::vector<std::string> our_names, their_names;
  for (const auto& [n, t] : ours) our_names.push_back(n);
  for (const auto& [n, t] : theirs) their_names.push_back(n);
  EXPECT_EQ(our_names, their_names);
  int differ = 0;
  for (const auto& [n, t] : theirs) {
    auto it = ours.find(n);
    if (it == ours.end()) continue;
    if (!BitEqual(it->second, t)) {
      ++differ;
      ADD_FAILURE() << n << " differs: ours " << it->second.scalar_type() << " "
                    << it->second.sizes() << ", save_pretrained " << t.scalar_type() << " "
                    << t.sizes()
                    << (t.scalar_type() == at::kByte && t.dim() == 1
                            ? "\n  ours:   " + JsonOf(it->second) + "\n  theirs: " + JsonOf(t)
                            : "");
    }
  }
  EXPECT_EQ(differ, 0);

  // The saved config's quantization_config is transformers' to_dict().
  const nlohmann::json saved_cfg = testing::ReadJsonFile(o.output_dir + "/config.json");
  const nlohmann::json their_cfg =
      testing::ReadJsonFile(PrequantCheckpoint(kMethod, GetParam()) + "/config.json");
  EXPECT_EQ(saved_cfg["quantization_config"], their_cfg["quantization_config"]);

  auto reloaded = LoadModelDir(o.output_dir, "", "float32");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  const int n = ref["n_windows"].get<int>();
  nlohmann::json windows = nlohmann::json::array();
  for (int i = 0; i < n; ++i) windows.push_back(testing::QuantWindows()["windows"][i]);
  at::Tensor a = testing::TargetLogprobs(*quantized->causal_lm, windows);
  at::Tensor b = testing::TargetLogprobs(*reloaded->causal_lm, windows);
  EXPECT_TRUE(BitEqual(a, b)) << "max diff " << (a - b).abs().max().item<double>();
  std::cout << "[bnb prequant] " << GetParam() << ": quantize at load " << quantized->seconds
            << " s, load the saved pre-quantized directory " << reloaded->seconds << " s, save "
            << saved->seconds << " s (" << saved->tensor_bytes << " bytes)\n";
}

// Pre-quantized load -> SaveAndReload: every tensor comes back bit for bit.
TEST_P(BnbPrequantTest, PrequantizedSaveAndReload) {
  const nlohmann::json ref = PrequantReference(kMethod, GetParam());
  const std::string dir = PrequantCheckpoint(kMethod, GetParam());
  auto loaded = LoadModelDir(dir, "", "float32");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto reloaded = testing::SaveAndReload(*loaded, dir, "bnb_resave_" + GetParam());
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  TensorMap before;
  for (auto& [name, t] : quant::ResidentParameters(*loaded->causal_lm)) before.emplace(name, t);
  int compared = 0;
  for (const auto& [name, t] : quant::ResidentParameters(*reloaded->causal_lm)) {
    auto it = before.find(name);
    ASSERT_NE(it, before.end()) << name;
    EXPECT_TRUE(BitEqual(it->second, t)) << name;
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(before.size()));
}

INSTANTIATE_TEST_SUITE_P(Cases, BnbPrequantTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(Cases, BnbRoundTripTest,
                         ::testing::Values("int8", "nf4", "fp4", "nf4_double_bf16",
                                           "fp4_storage_bf16"),
                         [](const auto& info) { return info.param; });

TEST(BnbPrequantConfigTest, BlocksizeComesFromTheQuantState) {
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, "nf4_blocksize128"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<BitsAndBytesQuantizer*>(loaded->quantizer.get());
  auto* m = dynamic_cast<BnbLinear4bit*>(q->converted_module(kQProj));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->absmax.numel(), 256 * 256 / 128);
  EXPECT_NE(JsonOf(m->quant_state).find("\"blocksize\": 128"), std::string::npos);
  // bnb's CPU dequantization with blocksize 128 (the fixture's own bnb run gives the same
  // logprobs, see MatchesTransformersPrequantizedLoad/nf4_blocksize128).
  at::Tensor want = bnb::Dequantize4bit(m->Resident(m->weight), m->absmax,
                                        bnb::FourBitCpuLut(bnb::FourBitType::kNf4), 128,
                                        {256, 256}, at::kFloat);
  EXPECT_TRUE(BitEqual(m->Dequantize(), want));
}

// BitsAndBytesConfig is not one of transformers' LOADING_ATTRIBUTES_CONFIG_TYPES: the
// checkpoint's config is used and the request's fields are ignored.
TEST(BnbPrequantConfigTest, RequestConfigIsIgnored) {
  const nlohmann::json ref = PrequantReference(kMethod, "nf4");
  auto loaded = LoadModelDir(PrequantCheckpoint(kMethod, "nf4"),
                             R"({"quant_method": "bitsandbytes", "load_in_4bit": true,
                                 "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": true,
                                 "bnb_4bit_compute_dtype": "bfloat16"})");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const nlohmann::json cfg = nlohmann::json::parse(loaded->quantizer->NormalizedConfigJson());
  EXPECT_EQ(cfg["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(cfg["bnb_4bit_use_double_quant"], false);
  EXPECT_EQ(cfg["bnb_4bit_compute_dtype"], "float32");
  testing::ExpectMatchesLibrary(*loaded, ref);

  // Even an 8-bit request on a 4-bit checkpoint: the checkpoint decides.
  auto eight = LoadModelDir(PrequantCheckpoint(kMethod, "nf4"),
                            R"({"quant_method": "bitsandbytes", "load_in_8bit": true})");
  ASSERT_TRUE(eight.ok()) << eight.status();
  EXPECT_EQ(nlohmann::json::parse(eight->quantizer->NormalizedConfigJson())["load_in_4bit"], true);
}

TEST(BnbPrequantConfigTest, ConflictingOrInvalidRequestIsRejected) {
  auto gptq = LoadModelDir(PrequantCheckpoint(kMethod, "nf4"),
                           R"({"quant_method": "gptq", "bits": 4, "group_size": 128})");
  ASSERT_FALSE(gptq.ok());
  EXPECT_EQ(gptq.status().code(), absl::StatusCode::kInvalidArgument) << gptq.status();
  EXPECT_NE(gptq.status().message().find("gptq"), std::string::npos) << gptq.status();
  // transformers validates the request before merging: both flags is a ValueError.
  auto both = LoadModelDir(PrequantCheckpoint(kMethod, "nf4"),
                           R"({"quant_method": "bitsandbytes", "load_in_4bit": true,
                               "load_in_8bit": true})");
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument) << both.status();
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

const std::string kQs = std::string(kQProj) + ".weight.quant_state.bitsandbytes__nf4";

TEST(BnbPrequantCorruptTest, MissingAbsmax) {
  const std::string dir = CorruptCopy("nf4", "no_absmax", [](TensorMap& t) {
    t.erase(std::string(kQProj) + ".weight.absmax");
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument,
              {"missing", std::string(kQProj) + ".weight.absmax"});
}

TEST(BnbPrequantCorruptTest, QuantStateNotJson) {
  const std::string dir =
      CorruptCopy("nf4", "qs_garbage", [](TensorMap& t) { t[kQs] = Bytes("{\"quant_type\": nf4"); });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kDataLoss, {kQs, "JSON"});
}

TEST(BnbPrequantCorruptTest, QuantStateMissingKey) {
  const std::string dir = CorruptCopy("nf4", "qs_nokey", [](TensorMap& t) {
    t[kQs] = Bytes(R"({"quant_type": "nf4", "dtype": "float32", "shape": [256, 256]})");
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kDataLoss, {kQs, "blocksize"});
}

TEST(BnbPrequantCorruptTest, QuantStateWrongShape) {
  const std::string dir = CorruptCopy("nf4", "qs_shape", [](TensorMap& t) {
    std::string j = JsonOf(t[kQs]);
    j.replace(j.find("[256, 256]"), 10, "[128, 512]");
    t[kQs] = Bytes(j);
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {kQs, "[128, 512]"});
}

TEST(BnbPrequantCorruptTest, QuantStateBlocksizeDisagreesWithAbsmax) {
  const std::string dir = CorruptCopy("nf4", "qs_blocksize", [](TensorMap& t) {
    std::string j = JsonOf(t[kQs]);
    j.replace(j.find("\"blocksize\": 64"), 15, "\"blocksize\": 256");
    t[kQs] = Bytes(j);
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument,
              {std::string(kQProj) + ".weight.absmax", "blocksize 256"});
}

TEST(BnbPrequantCorruptTest, QuantTypeDisagreesWithConfig) {
  const std::string dir = CorruptCopy("nf4", "qs_type", [](TensorMap& t) {
    std::string j = JsonOf(t[kQs]);
    j.replace(j.find("\"nf4\""), 5, "\"fp4\"");
    t[kQs] = Bytes(j);
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {kQs, "fp4"});
}

TEST(BnbPrequantCorruptTest, TwoQuantStateKeys) {
  const std::string dir = CorruptCopy("nf4", "qs_two", [](TensorMap& t) {
    t[std::string(kQProj) + ".weight.quant_state.bitsandbytes__fp4"] = t[kQs].clone();
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument,
              {"unexpected", std::string(kQProj) + ".weight.quant_state.bitsandbytes__fp4"});
}

TEST(BnbPrequantCorruptTest, WrongPackedWeightShape) {
  const std::string name = std::string(kQProj) + ".weight";
  const std::string dir = CorruptCopy("nf4", "weight_shape", [&](TensorMap& t) {
    t[name] = t[name].reshape({16384, 2}).clone();
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {name, "[16384, 2]", "[32768, 1]"});
}

TEST(BnbPrequantCorruptTest, WrongStorageDtype) {
  // The config says bfloat16 storage; the same bytes as uint8 are refused.
  const std::string name = std::string(kQProj) + ".weight";
  const std::string dir = CorruptCopy("fp4_storage_bf16", "storage", [&](TensorMap& t) {
    t[name] = t[name].view(at::kByte).reshape({-1, 1}).clone();
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {name, "BFloat16"});
}

TEST(BnbPrequantCorruptTest, AbsmaxNotFinite) {
  const std::string name = std::string(kQProj) + ".weight.absmax";
  const std::string dir = CorruptCopy("nf4", "absmax_nan", [&](TensorMap& t) {
    t[name] = t[name].clone();
    t[name][7] = std::nanf("");
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kDataLoss, {name, "NaN", "block 7"});
}

TEST(BnbPrequantCorruptTest, QuantMapNotBnbTable) {
  const std::string name = std::string(kQProj) + ".weight.quant_map";
  const std::string dir = CorruptCopy("nf4", "quant_map", [&](TensorMap& t) {
    t[name] = t[name].clone();
    t[name][3] = 0.5f;
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kDataLoss, {name, "code 3"});
}

TEST(BnbPrequantCorruptTest, NestedAbsmaxWrongLength) {
  const std::string name = std::string(kQProj) + ".weight.nested_absmax";
  const std::string dir = CorruptCopy("nf4_double_bf16", "nested", [&](TensorMap& t) {
    t[name] = t[name].slice(0, 0, 2).clone();
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {name, "2 entries"});
}

TEST(BnbPrequantCorruptTest, WeightFormatCol32IsRefused) {
  const std::string name = std::string(kQProj) + ".weight_format";
  const std::string dir = CorruptCopy("int8", "col32", [&](TensorMap& t) {
    t[name] = at::scalar_tensor(1, at::kByte);
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {name, "col32"});
}

TEST(BnbPrequantCorruptTest, FloatWeightWithScbIsRefused) {
  const std::string name = std::string(kQProj) + ".weight";
  const std::string dir = CorruptCopy("int8", "float_weight", [&](TensorMap& t) {
    t[name] = t[name].to(at::kFloat);
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kInvalidArgument, {name, "int8", "SCB"});
}

TEST(BnbPrequantCorruptTest, ScbNegative) {
  const std::string name = std::string(kQProj) + ".SCB";
  const std::string dir = CorruptCopy("int8", "scb", [&](TensorMap& t) {
    t[name] = t[name].clone();
    t[name][5] = -1.0f;
  });
  ExpectError(LoadModelDir(dir), absl::StatusCode::kDataLoss, {name, "-1.0", "row 5"});
}

TEST(BnbPrequantCorruptTest, MissingWeightFormatMeansRow) {
  // bnb's maybe_rearrange_weight reads a missing weight_format as "row"; SaveModel writes it.
  const std::string dir = CorruptCopy("int8", "no_format", [](TensorMap& t) {
    for (auto it = t.begin(); it != t.end();) {
      it = it->first.ends_with(".weight_format") ? t.erase(it) : std::next(it);
    }
  });
  auto loaded = LoadModelDir(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* q = dynamic_cast<BitsAndBytesQuantizer*>(loaded->quantizer.get());
  auto* m = dynamic_cast<BnbLinear8bitLt*>(q->converted_module(kQProj));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->weight_format.item<uint8_t>(), 0);
  auto state = q->SerializedState(*loaded->causal_lm);
  ASSERT_TRUE(state.ok()) << state.status();
  int formats = 0;
  for (const auto& [n, t] : *state) formats += n.ends_with(".weight_format");
  EXPECT_EQ(formats, 28);
}

}  // namespace
}  // namespace quantserve::quant

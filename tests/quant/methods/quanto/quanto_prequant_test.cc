// optimum-quanto's own serialization (QuantizedModelForCausalLM.save_pretrained: safetensors +
// quanto_qmap.json, no quantization_config) loaded pre-quantized, against optimum-quanto's
// inference on the reloaded checkpoint (tests/fixtures/make_prequant_quanto.py).

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "loader/safetensors_file.h"
#include "quant/methods/quanto/quanto_linear.h"
#include "quant/methods/quanto/quanto_quantizer.h"
#include "tests/quant/prequant_testing.h"

namespace quantserve::testing {
namespace {

namespace fs = std::filesystem;
using ::quantserve::quant::QuantoLinear;
using ::quantserve::quant::QuantoQuantizer;

// A copy of case `name`'s checkpoint to edit.
std::string CopyCheckpoint(const std::string& name, const std::string& tag) {
  const std::string dst = TempDir("quanto_" + tag);
  fs::copy(PrequantCheckpoint("quanto", name), dst, fs::copy_options::recursive);
  return dst;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}

// Rewrites <dir>/model.safetensors with `edit` applied to its tensors (a minimal writer: the
// loader only needs dtype/shape/offsets).
void RewriteTensors(const std::string& dir,
                    const std::function<void(std::map<std::string, at::Tensor>&)>& edit) {
  const std::string path = dir + "/model.safetensors";
  auto read = loader::ReadSafetensorsFile(common::Env::Default(), path);
  ASSERT_TRUE(read.ok()) << read.status();
  std::map<std::string, at::Tensor> tensors;
  for (auto& [k, v] : *read) tensors[k] = v.contiguous().clone();
  edit(tensors);
  nlohmann::ordered_json header;
  uint64_t offset = 0;
  auto dtype_name = [](c10::ScalarType t) -> std::string {
    switch (t) {
      case at::kFloat: return "F32";
      case at::kBFloat16: return "BF16";
      case at::kHalf: return "F16";
      case at::kChar: return "I8";
      case at::kByte: return "U8";
      case at::kInt: return "I32";
      case at::kLong: return "I64";
      case at::kFloat8_e4m3fn: return "F8_E4M3";
      default: return "?";
    }
  };
  for (auto& [k, v] : tensors) {
    const uint64_t bytes = v.numel() * v.element_size();
    header[k] = {{"dtype", dtype_name(v.scalar_type())},
                 {"shape", v.sizes().vec()},
                 {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  const uint64_t n = h.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (auto& [k, v] : tensors) {
    f.write(static_cast<const char*>(v.data_ptr()),
            static_cast<std::streamsize>(v.numel() * v.element_size()));
  }
}

class QuantoPrequantCase : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantoPrequantCase, MatchesOptimumQuanto) {
  const std::string name = GetParam();
  const nlohmann::json ref = PrequantReference("quanto", name);
  auto model = LoadModelDir(PrequantCheckpoint("quanto", name), "", ref.at("dtype"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->quantizer->quant_method(), "quanto");
  // Every saved tensor is held bit for bit under its checkpoint name.
  EXPECT_EQ(ExpectStateMatches(*model->causal_lm,
                               PrequantCheckpoint("quanto", name) + "/model.safetensors"),
            28 * (name == "int4" || name == "int2" ? 5 : 4) + 1 + 4 * 2 + 1);
  auto* q = dynamic_cast<QuantoQuantizer*>(model->quantizer.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->converted_modules().size(), ref.at("quantization_map").size());
  for (const auto& m : q->converted_modules()) {
    EXPECT_TRUE(ref.at("quantization_map").contains(m)) << m;
    auto* linear = dynamic_cast<QuantoLinear*>(q->converted_module(m));
    ASSERT_NE(linear, nullptr);
    EXPECT_EQ(linear->quanto_options().weights->name, name);
  }
  EXPECT_FALSE(q->WantsCalibration());
  // The normalized config is the map in optimum-quanto's names.
  const nlohmann::json normalized = nlohmann::json::parse(q->NormalizedConfigJson());
  EXPECT_EQ(normalized.at("quantization_map"), ref.at("quantization_map"));
  const double diff = ExpectMatchesLibrary(*model, ref);
  std::cout << "quanto/" << name << ": max |dlogprob| " << diff << "\n";
}

INSTANTIATE_TEST_SUITE_P(Cases, QuantoPrequantCase,
                         ::testing::Values("int8", "int4", "int2", "float8"));

// SaveModel writes optimum-quanto's own layout: saving what optimum-quanto saved gives back its
// files (every tensor bit for bit under the same name, the same quanto_qmap.json, a config.json
// without quantization_config), and the saved directory reloads to the same log-probabilities.
TEST_P(QuantoPrequantCase, SaveWritesOptimumQuantoLayout) {
  const std::string name = GetParam();
  const std::string source = PrequantCheckpoint("quanto", name);
  const nlohmann::json ref = PrequantReference("quanto", name);
  auto model = LoadModelDir(source, "", ref.at("dtype"));
  ASSERT_TRUE(model.ok()) << model.status();
  loader::SaveModelOptions o;
  o.output_dir = TempDir("quanto_save_" + name);
  fs::remove_all(o.output_dir);
  auto saved = loader::SaveModel(*model, source, o);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_NE(std::find(saved->files.begin(), saved->files.end(), "quanto_qmap.json"),
            saved->files.end());

  auto read_json = [](const std::string& path) {
    std::ifstream f(path);
    return nlohmann::json::parse(f);
  };
  EXPECT_EQ(read_json(o.output_dir + "/quanto_qmap.json"), read_json(source + "/quanto_qmap.json"));
  EXPECT_FALSE(read_json(o.output_dir + "/config.json").contains("quantization_config"));
  auto ours = loader::ReadSafetensorsFile(common::Env::Default(), o.output_dir + "/model.safetensors");
  auto theirs = loader::ReadSafetensorsFile(common::Env::Default(), source + "/model.safetensors");
  ASSERT_TRUE(ours.ok() && theirs.ok());
  EXPECT_EQ(ours->size(), theirs->size());
  for (const auto& [tensor, t] : *theirs) {
    ASSERT_TRUE(ours->count(tensor)) << tensor;
    EXPECT_EQ(ours->at(tensor).scalar_type(), t.scalar_type()) << tensor;
    EXPECT_TRUE(BitEqual(ours->at(tensor), t)) << tensor;
  }

  auto reloaded = LoadModelDir(o.output_dir, "", ref.at("dtype"));
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->quantizer->quant_method(), "quanto");
  const nlohmann::json windows = QuantWindows()["windows"];
  nlohmann::json used = nlohmann::json::array({windows[0]});
  EXPECT_TRUE(at::equal(TargetLogprobs(*model->causal_lm, used),
                        TargetLogprobs(*reloaded->causal_lm, used)));
}

// Quantized at load, the save names every converted
// module in quanto_qmap.json with its qtypes, as optimum-quanto's quantization_map does.
TEST(QuantoPrequant, QuantizeAtLoadSavesTheQuantizationMap) {
  auto model = LoadModelDir(DefaultModelDir(), R"({"quant_method": "quanto", "weights": "int8"})",
                            "float32");
  ASSERT_TRUE(model.ok()) << model.status();
  loader::SaveModelOptions o;
  o.output_dir = TempDir("quanto_save_fly");
  fs::remove_all(o.output_dir);
  auto saved = loader::SaveModel(*model, DefaultModelDir(), o);
  ASSERT_TRUE(saved.ok()) << saved.status();
  std::ifstream f(o.output_dir + "/quanto_qmap.json");
  const nlohmann::json qmap = nlohmann::json::parse(f);
  auto* q = dynamic_cast<QuantoQuantizer*>(model->quantizer.get());
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(qmap.size(), q->converted_modules().size());
  for (const std::string& m : q->converted_modules()) {
    EXPECT_EQ(qmap.at(m), (nlohmann::json{{"weights", "qint8"}, {"activations", "none"}})) << m;
  }
}

TEST(QuantoPrequant, RequestConfigOfSameMethodIsIgnored) {
  // QuantoConfig has no loading attributes: the checkpoint's map wins over the request's
  // weights, as transformers' merge_quantization_configs keeps the checkpoint's config.
  const nlohmann::json ref = PrequantReference("quanto", "int4");
  auto model = LoadModelDir(PrequantCheckpoint("quanto", "int4"),
                            R"({"quant_method": "quanto", "weights": "int8"})", "float32");
  ASSERT_TRUE(model.ok()) << model.status();
  auto* q = dynamic_cast<QuantoQuantizer*>(model->quantizer.get());
  ASSERT_NE(q, nullptr);
  auto* linear = dynamic_cast<QuantoLinear*>(q->converted_module(q->converted_modules()[0]));
  ASSERT_NE(linear, nullptr);
  EXPECT_STREQ(linear->quanto_options().weights->name, "int4");
  ExpectMatchesLibrary(*model, ref);
}

TEST(QuantoPrequant, ConflictingMethodIsInvalidArgument) {
  auto model = LoadModelDir(PrequantCheckpoint("quanto", "int8"),
                            R"({"quant_method": "bitsandbytes", "load_in_8bit": true})");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), "quanto")) << model.status();
}

TEST(QuantoPrequant, MapOnUnquantizedCheckpointIsInvalidArgument) {
  auto model = LoadModelDir(
      DefaultModelDir(),
      R"({"quant_method": "quanto", "quantization_map": {"model.layers.0.mlp.up_proj": {"weights": "qint8", "activations": "none"}}})");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
}

TEST(QuantoPrequant, WrongPackedShapeIsInvalidArgument) {
  const std::string dir = CopyCheckpoint("int4", "bad_shape");
  const std::string t = "model.layers.1.mlp.up_proj.weight._data._data";
  RewriteTensors(dir, [&](auto& m) { m[t] = m[t].narrow(0, 0, m[t].size(0) - 1).contiguous(); });
  auto model = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), t)) << model.status();
}

TEST(QuantoPrequant, MissingScaleIsInvalidArgument) {
  const std::string dir = CopyCheckpoint("int8", "missing_scale");
  const std::string t = "model.layers.2.self_attn.o_proj.weight._scale";
  RewriteTensors(dir, [&](auto& m) { m.erase(t); });
  auto model = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), t)) << model.status();
}

TEST(QuantoPrequant, WrongDataDtypeIsInvalidArgument) {
  const std::string dir = CopyCheckpoint("int8", "bad_dtype");
  const std::string t = "model.layers.0.self_attn.q_proj.weight._data";
  RewriteTensors(dir, [&](auto& m) { m[t] = m[t].view(at::kByte); });
  auto model = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), t)) << model.status();
}

TEST(QuantoPrequant, NonFiniteScaleIsDataLoss) {
  const std::string dir = CopyCheckpoint("int4", "inf_scale");
  const std::string t = "model.layers.3.mlp.down_proj.weight._scale";
  RewriteTensors(dir, [&](auto& m) { m[t].index_put_({5, 0}, INFINITY); });
  auto model = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kDataLoss) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), t)) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), "inf")) << model.status();
}

TEST(QuantoPrequant, UnknownQtypeInMapIsInvalidArgument) {
  const std::string dir = CopyCheckpoint("int8", "bad_qtype");
  nlohmann::json qmap = ReadJsonFile(dir + "/quanto_qmap.json");
  qmap["model.layers.0.mlp.up_proj"]["weights"] = "qfloat8_e5m2";
  WriteText(dir + "/quanto_qmap.json", qmap.dump());
  auto model = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), "model.layers.0.mlp.up_proj"))
      << model.status();
}

TEST(QuantoPrequant, MapNamingANormIsInvalidArgument) {
  const std::string dir = CopyCheckpoint("int8", "map_norm");
  nlohmann::json qmap = ReadJsonFile(dir + "/quanto_qmap.json");
  qmap["model.layers.0.input_layernorm"] = {{"weights", "qint8"}, {"activations", "none"}};
  WriteText(dir + "/quanto_qmap.json", qmap.dump());
  auto model = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), "model.layers.0.input_layernorm"))
      << model.status();
}

TEST(QuantoPrequant, ModuleMissingFromMapStaysFloatAndItsTensorsAreUnexpected) {
  // A module dropped from the map is built float; its packed tensors are then unexpected.
  const std::string dir = CopyCheckpoint("int8", "map_drop");
  nlohmann::json qmap = ReadJsonFile(dir + "/quanto_qmap.json");
  qmap.erase("model.layers.1.self_attn.k_proj");
  WriteText(dir + "/quanto_qmap.json", qmap.dump());
  auto model = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_TRUE(absl::StrContains(model.status().message(), "model.layers.1.self_attn.k_proj.weight"))
      << model.status();
}

}  // namespace
}  // namespace quantserve::testing

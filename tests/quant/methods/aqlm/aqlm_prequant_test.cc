// Pre-quantized AQLM checkpoints (tests/fixtures/make_prequant_aqlm.py): our inference against
// aqlm 1.1.7 + transformers 5.23 on CPU, corrupt copies, and the save -> reload round trip.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quant/methods/aqlm/aqlm_linear.h"
#include "quant/methods/aqlm/aqlm_quantizer.h"
#include "tests/quant/prequant_testing.h"

namespace quantserve::quant {
namespace {

namespace fs = std::filesystem;
using testing::ExpectMatchesLibrary;
using testing::LoadModelDir;
using testing::PrequantCheckpoint;
using testing::PrequantReference;

// A whole safetensors file in memory: enough to rewrite one tensor of a fixture copy.
struct StFile {
  nlohmann::ordered_json header;
  std::map<std::string, at::Tensor> tensors;
};

std::string StDtype(c10::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kChar: return "I8";
    case at::kShort: return "I16";
    case at::kInt: return "I32";
    case at::kLong: return "I64";
    default: return "U8";
  }
}

c10::ScalarType FromStDtype(const std::string& s) {
  static const std::map<std::string, c10::ScalarType> kMap = {
      {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I8", at::kChar},
      {"I16", at::kShort}, {"I32", at::kInt},  {"I64", at::kLong},      {"U8", at::kByte}};
  return kMap.at(s);
}

StFile ReadSt(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  StFile st;
  auto header = nlohmann::ordered_json::parse(bytes.substr(8, n));
  const char* data = bytes.data() + 8 + n;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      st.header[name] = info;
      continue;
    }
    const auto begin = info["data_offsets"][0].get<int64_t>();
    const auto end = info["data_offsets"][1].get<int64_t>();
    at::Tensor t = at::empty(info["shape"].get<std::vector<int64_t>>(),
                             at::TensorOptions().dtype(FromStDtype(info["dtype"])));
    EXPECT_EQ(t.nbytes(), static_cast<size_t>(end - begin)) << name;
    std::memcpy(t.data_ptr(), data + begin, static_cast<size_t>(end - begin));
    st.tensors[name] = t;
  }
  return st;
}

void WriteSt(const std::string& path, const StFile& st) {
  nlohmann::ordered_json header;
  if (st.header.contains("__metadata__")) header["__metadata__"] = st.header["__metadata__"];
  std::string data;
  for (const auto& [name, t] : st.tensors) {
    at::Tensor c = t.contiguous();
    header[name] = {{"dtype", StDtype(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {data.size(), data.size() + c.nbytes()}}};
    data.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  }
  std::string h = header.dump();
  const uint64_t n = h.size();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << h << data;
}

// A copy of the fixture checkpoint `c` where `edit` changes the tensors (and `edit_config`
// the config.json).
std::string CorruptCopy(const std::string& c, const std::string& name,
                        const std::function<void(StFile&)>& edit,
                        const std::function<void(nlohmann::json&)>& edit_config = nullptr) {
  const std::string dir = testing::TempDir("aqlm_" + name);
  fs::create_directories(dir);
  fs::copy(PrequantCheckpoint("aqlm", c), dir, fs::copy_options::recursive);
  StFile st = ReadSt(dir + "/model.safetensors");
  edit(st);
  WriteSt(dir + "/model.safetensors", st);
  if (edit_config) {
    nlohmann::json config = testing::ReadJsonFile(dir + "/config.json");
    edit_config(config);
    std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump(2);
  }
  return dir;
}

absl::StatusOr<loader::LoadedModel> LoadCase(const std::string& c) {
  return LoadModelDir(PrequantCheckpoint("aqlm", c), "",
                      PrequantReference("aqlm", c).at("dtype").get<std::string>());
}

const AqlmQuantizer& QuantizerOf(const loader::LoadedModel& m) {
  return dynamic_cast<const AqlmQuantizer&>(*m.quantizer);
}

void ExpectCase(const std::string& c) {
  const nlohmann::json ref = PrequantReference("aqlm", c);
  auto m = LoadCase(c);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(QuantizerOf(*m).converted_modules(),
            ref.at("converted_modules").get<std::vector<std::string>>());
  const double diff = ExpectMatchesLibrary(*m, ref);
  std::cout << "aqlm/" << c << ": max |dlogprob| " << diff << " (library ppl "
            << ref.at("perplexity") << ")\n";
}

TEST(AqlmPrequantTest, OneCodebook16BitMatchesLibrary) { ExpectCase("1x16_g8"); }
TEST(AqlmPrequantTest, TwoCodebooks8BitMatchesLibrary) { ExpectCase("2x8_g8"); }
TEST(AqlmPrequantTest, OutGroupSize2MatchesLibrary) { ExpectCase("2x8_og2"); }

TEST(AqlmPrequantTest, LinearWeightsNotToQuantizeStayFloat) {
  ExpectCase("skip");
  auto m = LoadCase("skip");
  ASSERT_TRUE(m.ok()) << m.status();
  const nlohmann::json ref = PrequantReference("aqlm", "skip");
  for (const auto& name : ref.at("skipped_modules").get<std::vector<std::string>>()) {
    EXPECT_EQ(QuantizerOf(*m).converted_module(name), nullptr) << name;
  }
  EXPECT_EQ(QuantizerOf(*m).converted_modules().size(), 25u);
}

TEST(AqlmPrequantTest, LoadedStateIsTheCheckpointAndDecodesOnce) {
  auto m = LoadCase("1x16_g8");
  ASSERT_TRUE(m.ok()) << m.status();
  StFile st = ReadSt(PrequantCheckpoint("aqlm", "1x16_g8") + "/model.safetensors");
  auto* q = dynamic_cast<AqlmLinear*>(
      QuantizerOf(*m).converted_module("model.layers.1.mlp.gate_proj"));
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->codes.scalar_type(), at::kShort);
  EXPECT_TRUE(at::equal(q->codes, st.tensors.at("model.layers.1.mlp.gate_proj.codes")));
  EXPECT_TRUE(at::equal(q->codebooks, st.tensors.at("model.layers.1.mlp.gate_proj.codebooks")));
  // codes + codebooks + scales as stored, plus the int32 indices.
  const int64_t n = 768 * 256 / 8;
  EXPECT_EQ(q->memory_footprint_bytes(), n * 2 + 65536 * 8 * 4 + 768 * 4 + n * 4);
  // The int16 container holds indices >= 2^15 as negative values.
  EXPECT_TRUE((q->codes < 0).any().item<bool>());
}

TEST(AqlmPrequantTest, DequantizeIsTheTileFormula) {
  // W[o*Go + r, i*Gi + s] = scales[o] * sum_c codebooks[c, code mod 2^nbits, r, s], with a
  // 12-bit codebook in an int16 container and 2x4 tiles.
  AqlmConfig config;
  config.in_group_size = 4;
  config.out_group_size = 2;
  config.num_codebooks = 2;
  config.nbits_per_codebook = 12;
  models::LinearOptions o{.in_features = 16, .out_features = 6, .bias = false};
  auto made = AqlmLinear::Create("t", o, config);
  ASSERT_TRUE(made.ok()) << made.status();
  AqlmLinear& q = **made;
  at::manual_seed(3);
  at::Tensor idx = at::randint(0, 4096, {3, 4, 2}, at::kLong);
  at::Tensor codes = at::where(idx >= 2048, idx - 4096, idx).to(at::kShort);  // pack_int_data
  at::Tensor books = at::randn({2, 4096, 2, 4});
  at::Tensor scales = at::rand({3, 1, 1, 1}) + 0.5;
  LoadTarget target;
  ASSERT_TRUE(q.LoadSerializedTensor("codes", "t.codes", codes, target).ok());
  ASSERT_TRUE(q.LoadSerializedTensor("codebooks", "t.codebooks", books, target).ok());
  ASSERT_TRUE(q.LoadSerializedTensor("scales", "t.scales", scales, target).ok());
  ASSERT_TRUE(q.FinishSerializedLoad("t", target).ok());
  at::Tensor w = at::zeros({6, 16});
  for (int64_t a = 0; a < 3; ++a) {
    for (int64_t i = 0; i < 4; ++i) {
      at::Tensor tile = books[0][idx[a][i][0].item<int64_t>()] +
                        books[1][idx[a][i][1].item<int64_t>()];
      w.slice(0, a * 2, a * 2 + 2).slice(1, i * 4, i * 4 + 4).copy_(tile * scales[a][0][0][0]);
    }
  }
  EXPECT_TRUE(at::allclose(q.Dequantize(), w, 0, 1e-6));
  at::Tensor x = at::randn({5, 16});
  EXPECT_TRUE(at::allclose(q.Forward(x), at::linear(x, w), 1e-5, 1e-5));
}

TEST(AqlmPrequantTest, CodeOutsideANarrowCodebookIsDataLoss) {
  AqlmConfig config;
  config.nbits_per_codebook = 12;
  models::LinearOptions o{.in_features = 16, .out_features = 2, .bias = false};
  auto q = *AqlmLinear::Create("m.q", o, config);
  at::Tensor codes = at::zeros({2, 2, 1}, at::kShort);
  codes[1][0][0] = 5000;
  LoadTarget target;
  ASSERT_TRUE(q->LoadSerializedTensor("codes", "m.q.codes", codes, target).ok());
  ASSERT_TRUE(q->LoadSerializedTensor("codebooks", "m.q.codebooks", at::zeros({1, 4096, 1, 8}),
                                      target).ok());
  ASSERT_TRUE(q->LoadSerializedTensor("scales", "m.q.scales", at::ones({2, 1, 1, 1}), target).ok());
  absl::Status s = q->FinishSerializedLoad("m.q", target);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(s.message(),
            "tensor 'm.q.codes' has codes beyond codebook: value 5000 at [1, 0, 0] is outside "
            "[-2048, 4096) for a 4096-entry codebook (aqlm 1x12 (in_group_size 8, "
            "out_group_size 1))");
}

TEST(AqlmPrequantTest, ShapesThatDoNotTileAreInvalidArgument) {
  AqlmConfig config;
  config.out_group_size = 3;
  auto q = AqlmLinear::Create("m.q", {.in_features = 16, .out_features = 8}, config);
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(q.status().message().find("out_group_size 3"), std::string::npos) << q.status();
}

void ExpectLoadFails(const std::string& dir, absl::StatusCode code, const std::string& needle) {
  auto m = LoadModelDir(dir, "", "float32");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), code) << m.status();
  EXPECT_NE(m.status().message().find(needle), std::string::npos) << m.status();
}

constexpr char kCodes[] = "model.layers.1.self_attn.k_proj.codes";
constexpr char kBooks[] = "model.layers.1.self_attn.k_proj.codebooks";
constexpr char kScales[] = "model.layers.1.self_attn.k_proj.scales";

TEST(AqlmPrequantTest, Int16CodesFor8BitCodebooksAreInvalidArgument) {
  const std::string dir = CorruptCopy("2x8_g8", "int16", [](StFile& st) {
    st.tensors[kCodes] = st.tensors[kCodes].to(at::kShort);
  });
  ExpectLoadFails(dir, absl::StatusCode::kInvalidArgument,
                  std::string("tensor '") + kCodes +
                      "' is Short [128, 32, 2] but aqlm 2x8 (in_group_size 8, out_group_size 1) "
                      "expects Char [128, 32, 2]");
}

TEST(AqlmPrequantTest, WrongCodesShapeIsInvalidArgument) {
  const std::string dir = CorruptCopy("1x16_g8", "codes_shape", [](StFile& st) {
    st.tensors[kCodes] = st.tensors[kCodes].reshape({128, 16, 2});
  });
  ExpectLoadFails(dir, absl::StatusCode::kInvalidArgument,
                  std::string("tensor '") + kCodes + "' is Short [128, 16, 2] but aqlm 1x16");
}

TEST(AqlmPrequantTest, MissingCodebooksAreInvalidArgument) {
  const std::string dir =
      CorruptCopy("2x8_g8", "no_books", [](StFile& st) { st.tensors.erase(kBooks); });
  ExpectLoadFails(dir, absl::StatusCode::kInvalidArgument, kBooks);
}

TEST(AqlmPrequantTest, CodebookShapeMismatchIsInvalidArgument) {
  // An 8-bit codebook in a checkpoint whose config says 16 bits.
  const std::string dir = CorruptCopy("1x16_g8", "book_shape", [](StFile& st) {
    st.tensors[kBooks] = st.tensors[kBooks].slice(1, 0, 256).contiguous();
  });
  ExpectLoadFails(dir, absl::StatusCode::kInvalidArgument,
                  std::string("tensor '") + kBooks +
                      "' is Float [1, 256, 1, 8] but aqlm 1x16 (in_group_size 8, out_group_size "
                      "1) expects Float [1, 65536, 1, 8]");
}

TEST(AqlmPrequantTest, CodesBeyondANarrowerCodebookAreDataLoss) {
  // nbits 7 in the int8 container: the 8-bit codes of 2x8_g8 use [-128, 128), past [-64, 128).
  const std::string dir = CorruptCopy(
      "2x8_g8", "beyond",
      [](StFile& st) {
        for (auto& [name, t] : st.tensors) {
          if (name.size() > 10 && name.substr(name.size() - 10) == ".codebooks") {
            t = t.slice(1, 0, 128).contiguous();
          }
        }
      },
      [](nlohmann::json& c) { c["quantization_config"]["nbits_per_codebook"] = 7; });
  ExpectLoadFails(dir, absl::StatusCode::kDataLoss, "codes beyond codebook");
  ExpectLoadFails(dir, absl::StatusCode::kDataLoss, "is outside [-64, 128) for a 128-entry");
}

TEST(AqlmPrequantTest, NonFiniteScalesAreDataLoss) {
  const std::string dir = CorruptCopy("2x8_g8", "nan_scales", [](StFile& st) {
    st.tensors[kScales][3][0][0][0] = std::nan("");
  });
  ExpectLoadFails(dir, absl::StatusCode::kDataLoss,
                  std::string("tensor '") + kScales + "' has non-finite values");
}

TEST(AqlmPrequantTest, RequestConfigIsValidatedThenTheCheckpointsIsUsed) {
  // AQLM has no loading attributes: the request's sizes are ignored (merge_quantization_configs).
  const std::string ckpt = PrequantCheckpoint("aqlm", "2x8_g8");
  auto m = LoadModelDir(ckpt, R"({"quant_method": "aqlm", "num_codebooks": 1,
                                  "nbits_per_codebook": 16})", "float32");
  ASSERT_TRUE(m.ok()) << m.status();
  auto j = nlohmann::json::parse(m->quantizer->NormalizedConfigJson());
  EXPECT_EQ(j["num_codebooks"], 2);
  EXPECT_EQ(j["nbits_per_codebook"], 8);
  ExpectMatchesLibrary(*m, PrequantReference("aqlm", "2x8_g8"));

  auto bad = LoadModelDir(ckpt, R"({"quant_method": "aqlm", "num_codebooks": 1.5})", "float32");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
}

TEST(AqlmPrequantTest, ConflictingQuantMethodIsInvalidArgument) {
  auto m = LoadModelDir(PrequantCheckpoint("aqlm", "1x16_g8"),
                        R"({"quant_method": "gptq", "bits": 4})", "float32");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find("conflicts with the checkpoint's 'aqlm'"),
            std::string::npos)
      << m.status();
}

void ExpectRoundTrip(const std::string& c) {
  auto m = LoadCase(c);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string ckpt = PrequantCheckpoint("aqlm", c);
  const std::string out = testing::TempDir("aqlm_save_" + c);
  loader::SaveModelOptions o;
  o.output_dir = out;
  auto saved = loader::SaveModel(*m, ckpt, o);
  ASSERT_TRUE(saved.ok()) << saved.status();
  // The saved tensors are the library's checkpoint, byte for byte, and the config its config.
  StFile ours = ReadSt(out + "/model.safetensors");
  StFile theirs = ReadSt(ckpt + "/model.safetensors");
  ASSERT_EQ(ours.tensors.size(), theirs.tensors.size());
  for (const auto& [name, t] : theirs.tensors) {
    auto it = ours.tensors.find(name);
    ASSERT_NE(it, ours.tensors.end()) << name;
    EXPECT_EQ(it->second.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(it->second, t)) << name;
  }
  EXPECT_EQ(testing::ReadJsonFile(out + "/config.json")["quantization_config"],
            testing::ReadJsonFile(ckpt + "/config.json")["quantization_config"]);
  auto reloaded = LoadModelDir(out, "", "float32");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  const auto a = m->causal_lm->NamedParameters();
  const auto b = reloaded->causal_lm->NamedParameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_TRUE(at::equal(*a[i].slot.tensor, *b[i].slot.tensor)) << a[i].name;
  }
  nlohmann::json windows = testing::QuantWindows()["windows"];
  nlohmann::json two = {windows[0], windows[1]};
  EXPECT_TRUE(at::equal(testing::TargetLogprobs(*m->causal_lm, two),
                        testing::TargetLogprobs(*reloaded->causal_lm, two)));
  fs::remove_all(out);
}

TEST(AqlmPrequantTest, SaveAndReloadIsIdentical1x16) { ExpectRoundTrip("1x16_g8"); }
TEST(AqlmPrequantTest, SaveAndReloadIsIdentical2x8OutGroup2) { ExpectRoundTrip("2x8_og2"); }
TEST(AqlmPrequantTest, SaveAndReloadIsIdenticalWithSkips) { ExpectRoundTrip("skip"); }

}  // namespace
}  // namespace quantserve::quant

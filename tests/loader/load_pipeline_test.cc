#include "loader/load_pipeline.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "tests/loader/safetensors_test_util.h"

namespace quantserve::loader {
namespace {

namespace fs = std::filesystem;

struct Shape {
  int64_t vocab = 256, hidden = 128, intermediate = 256, layers = 2, heads = 4, kv_heads = 2;
  bool tie = false;
};

std::string ConfigJson(const Shape& s, const std::string& extra = "") {
  return "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
         "\"vocab_size\": " + std::to_string(s.vocab) +
         ", \"hidden_size\": " + std::to_string(s.hidden) +
         ", \"intermediate_size\": " + std::to_string(s.intermediate) +
         ", \"num_hidden_layers\": " + std::to_string(s.layers) +
         ", \"num_attention_heads\": " + std::to_string(s.heads) +
         ", \"num_key_value_heads\": " + std::to_string(s.kv_heads) +
         ", \"max_position_embeddings\": 128, \"torch_dtype\": \"float32\"" +
         ", \"tie_word_embeddings\": " + (s.tie ? "true" : "false") + extra + "}";
}

// Every tensor a Llama of shape `s` expects, with its shape.
std::vector<std::pair<std::string, std::vector<int64_t>>> LlamaTensors(const Shape& s) {
  const int64_t d = s.hidden / s.heads;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {
      {"model.embed_tokens.weight", {s.vocab, s.hidden}}, {"model.norm.weight", {s.hidden}}};
  if (!s.tie) out.push_back({"lm_head.weight", {s.vocab, s.hidden}});
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "self_attn.q_proj.weight", {s.heads * d, s.hidden}});
    out.push_back({p + "self_attn.k_proj.weight", {s.kv_heads * d, s.hidden}});
    out.push_back({p + "self_attn.v_proj.weight", {s.kv_heads * d, s.hidden}});
    out.push_back({p + "self_attn.o_proj.weight", {s.hidden, s.heads * d}});
    out.push_back({p + "mlp.gate_proj.weight", {s.intermediate, s.hidden}});
    out.push_back({p + "mlp.up_proj.weight", {s.intermediate, s.hidden}});
    out.push_back({p + "mlp.down_proj.weight", {s.hidden, s.intermediate}});
    out.push_back({p + "input_layernorm.weight", {s.hidden}});
    out.push_back({p + "post_attention_layernorm.weight", {s.hidden}});
  }
  return out;
}

class LoadPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qs_load_pipeline_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void WriteFile(const std::string& name, const std::string& bytes) {
    std::ofstream out(dir_ / name, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  // Writes config.json and model.safetensors; `edit` may drop/rename/add tensors.
  void WriteModel(const Shape& s, std::function<void(std::vector<std::pair<std::string,
                                                     std::vector<int64_t>>>&)> edit = nullptr,
                  const std::string& extra_config = "") {
    auto tensors = LlamaTensors(s);
    if (edit) edit(tensors);
    testing::SafetensorsBuilder b;
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (const auto& [name, shape] : tensors) {
      int64_t n = 1;
      for (int64_t v : shape) n *= v;
      std::vector<float> values(n);
      for (auto& v : values) v = normal(rng);
      b.AddF32(name, shape, values);
    }
    WriteFile("config.json", ConfigJson(s, extra_config));
    WriteFile("model.safetensors", b.Build());
  }

  absl::StatusOr<LoadedModel> Load(const std::string& dtype = "auto",
                                   const std::string& quant = "",
                                   const std::string& device = "cpu") {
    LoadPipelineOptions o;
    o.model_dir = dir_.string();
    o.dtype = dtype;
    o.quantization_config_json = quant;
    o.device = device;
    return RunLoadPipeline(o, nullptr);
  }

  fs::path dir_;
};

TEST_F(LoadPipelineTest, LoadsEveryTensorAndReportsFootprint) {
  Shape s;
  WriteModel(s);
  std::vector<std::string> phases;
  LoadPipelineOptions o;
  o.model_dir = dir_.string();
  int64_t last_done = -1, total = 0;
  auto m = RunLoadPipeline(o, [&](const LoadPipelineProgress& p) {
    if (phases.empty() || phases.back() != p.phase) phases.push_back(p.phase);
    if (p.phase == "weights") {
      EXPECT_GE(p.tensors_done, last_done);
      last_done = p.tensors_done;
      total = p.tensors_total;
    }
  });
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(phases, (std::vector<std::string>{"config", "quantizer", "skeleton", "weights",
                                              "post_process", "ready"}));
  EXPECT_EQ(last_done, total);
  int64_t expected = 0;
  for (const auto& [name, shape] : LlamaTensors(s)) {
    int64_t n = 1;
    for (int64_t v : shape) n *= v;
    expected += n;
  }
  EXPECT_EQ(m->parameters, expected);
  EXPECT_EQ(m->memory_footprint_bytes, expected * 4);
  EXPECT_EQ(m->quantizer->quant_method(), "none");
  EXPECT_FALSE(m->causal_lm->model->norm->weight.is_meta());
}

TEST_F(LoadPipelineTest, Bfloat16HalvesTheFootprint) {
  Shape s;
  WriteModel(s);
  auto f32 = Load("float32");
  auto bf16 = Load("bfloat16");
  ASSERT_TRUE(f32.ok() && bf16.ok());
  EXPECT_EQ(bf16->memory_footprint_bytes * 2, f32->memory_footprint_bytes);
  EXPECT_EQ(bf16->causal_lm->lm_head->options().dtype, c10::ScalarType::BFloat16);
}

TEST_F(LoadPipelineTest, TiedEmbeddingsNeedNoLmHead) {
  Shape s;
  s.tie = true;
  WriteModel(s);
  auto m = Load();
  ASSERT_TRUE(m.ok()) << m.status();
  auto* dense = dynamic_cast<models::DenseLinear*>(m->causal_lm->lm_head.get());
  ASSERT_NE(dense, nullptr);
  EXPECT_TRUE(dense->weight.is_same(m->causal_lm->model->embed_tokens->weight));
}

TEST_F(LoadPipelineTest, MissingAndUnexpectedTensorsAreListedTogether) {
  WriteModel(Shape{}, [](auto& tensors) {
    std::erase_if(tensors, [](const auto& t) { return t.first == "model.norm.weight"; });
    tensors.push_back({"model.extra.weight", {4}});
  });
  auto m = Load();
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("missing tensors (1): model.norm.weight"), std::string::npos)
      << m.status();
  EXPECT_NE(m.status().message().find("unexpected tensors (1): model.extra.weight"),
            std::string::npos)
      << m.status();
}

TEST_F(LoadPipelineTest, WrongShapeNamesTensorAndShapes) {
  WriteModel(Shape{}, [](auto& tensors) {
    for (auto& t : tensors) {
      if (t.first == "model.layers.1.mlp.up_proj.weight") t.second = {128, 256};
    }
  });
  auto m = Load();
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(m.status().message().find("[256, 128]"), std::string::npos) << m.status();
}

TEST_F(LoadPipelineTest, TruncatedCheckpointIsDataLoss) {
  WriteModel(Shape{});
  fs::resize_file(dir_ / "model.safetensors", fs::file_size(dir_ / "model.safetensors") - 100);
  auto m = Load();
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << m.status();
  EXPECT_NE(m.status().message().find("model.safetensors"), std::string::npos);
}

TEST_F(LoadPipelineTest, IntegerTensorWhereFloatExpectedIsInvalid) {
  Shape s;
  auto tensors = LlamaTensors(s);
  testing::SafetensorsBuilder b;
  for (const auto& [name, shape] : tensors) {
    int64_t n = 1;
    for (int64_t v : shape) n *= v;
    if (name == "model.norm.weight") {
      b.Add(name, "I32", shape, std::string(n * 4, '\0'));
    } else {
      b.AddF32(name, shape, std::vector<float>(n, 0.01f));
    }
  }
  WriteFile("config.json", ConfigJson(s));
  WriteFile("model.safetensors", b.Build());
  auto m = Load();
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("model.norm.weight"), std::string::npos) << m.status();
}

TEST_F(LoadPipelineTest, ConfigAndOptionErrors) {
  WriteModel(Shape{});
  EXPECT_EQ(Load("float64").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Load("auto", "", "tpu").status().code(), absl::StatusCode::kInvalidArgument);
  if (!at::hasCUDA()) {
    auto m = Load("auto", "", "cuda:0");
    EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
  }
  auto unknown = Load("auto", R"({"quant_method": "int3_magic"})");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("supported: aqlm, awq, bitsandbytes"), std::string::npos)
      << unknown.status();
  EXPECT_EQ(Load("auto", "[]").status().code(), absl::StatusCode::kInvalidArgument);
  fs::remove(dir_ / "config.json");
  EXPECT_EQ(Load().status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LoadPipelineTest, PrequantizedCheckpointMethodConflictsAreInvalid) {
  WriteModel(Shape{}, nullptr, R"(, "quantization_config": {"quant_method": "gptq", "bits": 4})");
  auto m = Load("auto", R"({"quant_method": "awq"})");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("conflicts"), std::string::npos) << m.status();
}

TEST_F(LoadPipelineTest, PickleOnlyDirectoryIsRefused) {
  WriteFile("config.json", ConfigJson(Shape{}));
  WriteFile("pytorch_model.bin", "not loaded");
  auto m = Load();
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
}

// Streaming keeps host memory near the loaded model plus one tensor, never the checkpoint
// plus the model. The model here is ~170 MB in float32.
TEST_F(LoadPipelineTest, PeakMemoryStaysNearModelPlusOneTensor) {
  Shape s;
  s.vocab = 16384;
  s.hidden = 512;
  s.intermediate = 1536;
  s.layers = 8;
  s.heads = 8;
  s.kv_heads = 8;
  WriteModel(s);
  const int64_t file_bytes = static_cast<int64_t>(fs::file_size(dir_ / "model.safetensors"));
  const int64_t largest = s.vocab * s.hidden * 4;
  constexpr int64_t kSlack = 24 << 20;  // allocator and page granularity
  for (const std::string dtype : {"bfloat16", "float32"}) {
    auto m = Load(dtype);
    ASSERT_TRUE(m.ok()) << m.status();
    std::cout << "[ peak RSS ] dtype=" << dtype << " checkpoint_bytes=" << file_bytes
              << " model_bytes=" << m->memory_footprint_bytes
              << " peak_rss_growth_bytes=" << m->peak_rss_growth_bytes << " ratio_to_model="
              << double(m->peak_rss_growth_bytes) / m->memory_footprint_bytes << std::endl;
    EXPECT_LE(m->peak_rss_growth_bytes, m->memory_footprint_bytes + largest + kSlack) << dtype;
    if (dtype == "bfloat16") {
      // Reading the whole checkpoint first would cost at least the file size.
      EXPECT_LT(m->peak_rss_growth_bytes, file_bytes);
    }
  }
}

TEST(ParseMaxMemoryTest, SizesAndDevices) {
  auto m = ParseMaxMemory(R"({"cpu": "8GiB", "0": "20GB", "cuda:1": 1024, "cuda": "1.5MiB"})");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("cpu"), int64_t{8} << 30);
  EXPECT_EQ(m->at("cuda:0"), 1572864);  // "cuda" is cuda:0; the later entry wins
  EXPECT_EQ(m->at("cuda:1"), 1024);
  EXPECT_TRUE(ParseMaxMemory("").ok());
  EXPECT_TRUE(ParseMaxMemory("{}")->empty());
}

TEST(ParseMaxMemoryTest, BadEntriesNameTheDevice) {
  for (const char* bad : {R"({"cpu": "lots"})", R"({"tpu": "1GB"})", R"({"disk": "1GB"})",
                          R"({"cpu": -5})", R"(["cpu"])"}) {
    auto m = ParseMaxMemory(bad);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(m.status().message().find("max_memory"), absl::string_view::npos) << bad;
  }
}

TEST_F(LoadPipelineTest, MaxMemoryTooSmallIsResourceExhaustedBeforeReading) {
  WriteModel(Shape{});
  LoadPipelineOptions o;
  o.model_dir = dir_.string();
  o.dtype = "float32";
  o.max_memory = {{"cpu", 100000}};
  auto m = RunLoadPipeline(o, nullptr);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(m.status().message().find("max_memory"), absl::string_view::npos) << m.status();
  o.max_memory = {{"cpu", int64_t{1} << 30}};
  EXPECT_TRUE(RunLoadPipeline(o, nullptr).ok());
}

// Quantizing at load streams too: each float weight is read from the mapping, quantized, and
// dropped, so the peak is the quantized model plus one float tensor (the embedding, copied as
// is), far below the float checkpoint.
TEST_F(LoadPipelineTest, QuantizeAtLoadPeakIsQuantizedModelPlusOneTensor) {
  Shape s;
  s.vocab = 16384;
  s.hidden = 512;
  s.intermediate = 1536;
  s.layers = 8;
  s.heads = 8;
  s.kv_heads = 8;
  WriteModel(s);
  const int64_t file_bytes = static_cast<int64_t>(fs::file_size(dir_ / "model.safetensors"));
  const int64_t largest = s.vocab * s.hidden * 4;
  constexpr int64_t kSlack = 24 << 20;  // allocator, page granularity, quantizer scratch
  for (const std::string config :
       {R"({"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4"})",
        R"({"quant_method": "bitsandbytes", "load_in_8bit": true})",
        R"({"quant_method": "hqq", "nbits": 4, "group_size": 64})"}) {
    auto m = Load("float32", config);
    ASSERT_TRUE(m.ok()) << config << ": " << m.status();
    std::cout << "[ peak RSS ] " << config << " checkpoint_bytes=" << file_bytes
              << " quantized_model_bytes=" << m->memory_footprint_bytes
              << " peak_rss_growth_bytes=" << m->peak_rss_growth_bytes
              << " ratio_to_model=" << double(m->peak_rss_growth_bytes) / m->memory_footprint_bytes
              << " ratio_to_checkpoint=" << double(m->peak_rss_growth_bytes) / file_bytes
              << std::endl;
    EXPECT_LT(m->memory_footprint_bytes, file_bytes * 3 / 4) << config;
    EXPECT_LE(m->peak_rss_growth_bytes, m->memory_footprint_bytes + largest + kSlack) << config;
    EXPECT_LT(m->peak_rss_growth_bytes, file_bytes) << config;
  }
}

}  // namespace
}  // namespace quantserve::loader

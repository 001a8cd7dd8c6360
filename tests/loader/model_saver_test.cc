// SaveModel on the unquantized default model (the method-specific layouts are tested with
// each method): a complete, reloadable HF directory, sharding with an index, and refusals
// that leave nothing behind.
#include "loader/model_saver.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "loader/load_pipeline.h"
#include "tests/testing/fault_injection_env.h"
#include "tests/testing/fixtures.h"
#include "quant/quantized_linear.h"

namespace quantserve::loader {
namespace {

namespace fs = std::filesystem;

std::string ModelDir() { return testing::SourceDir() + "/assets/models/kjv-llama"; }

fs::path Scratch(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("qs_saver_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

LoadedModel Load(const std::string& dir) {
  LoadPipelineOptions o;
  o.model_dir = dir;
  auto m = RunLoadPipeline(o, nullptr);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

std::map<std::string, at::Tensor> Params(const LoadedModel& m) {
  std::map<std::string, at::Tensor> out;
  for (auto& [name, t] : quant::ResidentParameters(*m.causal_lm)) out[name] = t;
  return out;
}

nlohmann::json ReadJson(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

void ExpectSameParameters(const LoadedModel& a, const LoadedModel& b) {
  auto pa = Params(a), pb = Params(b);
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& [name, t] : pa) {
    ASSERT_TRUE(pb.count(name)) << name;
    EXPECT_TRUE(at::equal(t, pb.at(name))) << name;
    EXPECT_EQ(t.scalar_type(), pb.at(name).scalar_type()) << name;
  }
}

TEST(ModelSaverTest, SavedDirectoryReloadsToTheSameModel) {
  LoadedModel model = Load(ModelDir());
  const fs::path out = Scratch("single");
  auto r = SaveModel(model, ModelDir(), {.output_dir = out.string()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files.front(), "model.safetensors");
  for (const char* f : {"config.json", "tokenizer.json", "generation_config.json"}) {
    EXPECT_TRUE(fs::exists(out / f)) << f;
  }
  // Tied lm_head is not written (transformers drops tied duplicates).
  EXPECT_EQ(r->tensors, static_cast<int64_t>(Params(model).size()) - 1);
  const nlohmann::json config = ReadJson(out / "config.json");
  EXPECT_FALSE(config.contains("quantization_config"));
  EXPECT_EQ(config["dtype"], "float32");
  EXPECT_EQ(config["architectures"], ReadJson(fs::path(ModelDir()) / "config.json")["architectures"]);
  ExpectSameParameters(model, Load(out.string()));
  // No temporary directory is left next to the output.
  for (const auto& e : fs::directory_iterator(out.parent_path())) {
    EXPECT_EQ(e.path().filename().string().find(".saving-"), std::string::npos) << e.path();
  }
  fs::remove_all(out);
}

TEST(ModelSaverTest, ShardsFollowMaxShardBytesWithAnIndex) {
  LoadedModel model = Load(ModelDir());
  const fs::path out = Scratch("sharded");
  const int64_t max_shard = 3 * 1000 * 1000;
  auto r = SaveModel(model, ModelDir(), {.output_dir = out.string(), .max_shard_bytes = max_shard});
  ASSERT_TRUE(r.ok()) << r.status();
  const nlohmann::json index = ReadJson(out / "model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["total_size"], r->tensor_bytes);
  std::map<std::string, int> per_file;
  for (const auto& [name, file] : index["weight_map"].items()) per_file[file.get<std::string>()]++;
  EXPECT_GT(per_file.size(), 2u);
  EXPECT_EQ(per_file.size(),
            static_cast<size_t>(std::count_if(r->files.begin(), r->files.end(), [](const auto& f) {
              return f.size() > 12 && f.substr(f.size() - 12) == ".safetensors";
            })));
  for (const auto& [file, n] : per_file) {
    EXPECT_TRUE(fs::exists(out / file)) << file;
    EXPECT_NE(file.find("-of-"), std::string::npos) << file;
    // A shard only exceeds the limit when it holds a single larger tensor.
    if (n > 1) {
      EXPECT_LE(static_cast<int64_t>(fs::file_size(out / file)), max_shard + 4096) << file;
    }
  }
  ExpectSameParameters(model, Load(out.string()));
  fs::remove_all(out);
}

TEST(ModelSaverTest, RefusesANonEmptyDestinationAndLeavesItAlone) {
  LoadedModel model = Load(ModelDir());
  const fs::path out = Scratch("exists");
  fs::create_directories(out);
  std::ofstream(out / "keep.txt") << "mine";
  auto r = SaveModel(model, ModelDir(), {.output_dir = out.string()});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
  EXPECT_TRUE(fs::exists(out / "keep.txt"));
  EXPECT_FALSE(fs::exists(out / "config.json"));
  // An empty directory is fine.
  fs::remove(out / "keep.txt");
  EXPECT_TRUE(SaveModel(model, ModelDir(), {.output_dir = out.string()}).ok());
  fs::remove_all(out);
}

TEST(ModelSaverTest, BadSourceConfigFailsBeforeWritingAnything) {
  LoadedModel model = Load(ModelDir());
  const fs::path out = Scratch("nosource");
  auto r = SaveModel(model, "/nonexistent-source", {.output_dir = out.string()});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_FALSE(fs::exists(out));
}

// Disk faults through an injected Env: a full disk while writing a shard, a failing fsync, a
// failed rename into place, a directory that cannot be created. Each is reported with its
// errno's canonical code (RESOURCE_EXHAUSTED for a full disk or quota) naming the path, and
// leaves nothing under the parent: neither the
// destination nor the temporary directory. The same model then saves fine.
TEST(ModelSaverTest, DiskFaultsLeaveNothingBehindAndSayWhy) {
  using testing::FaultInjectionEnv;
  LoadedModel model = Load(ModelDir());
  const fs::path parent = Scratch("faults");
  fs::create_directories(parent);
  struct Case {
    FaultInjectionEnv::Op op;
    int fail_at;
    int error_number;
  };
  const Case kCases[] = {
      {FaultInjectionEnv::Op::kAppend, 3, ENOSPC},
      {FaultInjectionEnv::Op::kAppend, 1, EDQUOT},
      {FaultInjectionEnv::Op::kSync, 1, EIO},
      {FaultInjectionEnv::Op::kNewFile, 2, EACCES},
      {FaultInjectionEnv::Op::kRename, 1, EXDEV},
      {FaultInjectionEnv::Op::kCreateDirs, 2, EROFS},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(::testing::Message() << "op " << static_cast<int>(c.op) << " errno " << c.error_number);
    FaultInjectionEnv env(common::Env::Default(), c.op, c.fail_at, c.error_number);
    const fs::path out = parent / "model";
    auto r = SaveModel(model, ModelDir(),
                       {.output_dir = out.string(), .max_shard_bytes = 1 << 20, .env = &env});
    EXPECT_EQ(env.failures(), 1);
    EXPECT_EQ(r.status().code(), absl::ErrnoToStatusCode(c.error_number)) << r.status();
    if (c.error_number == ENOSPC || c.error_number == EDQUOT) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
    }
    EXPECT_TRUE(fs::is_empty(parent)) << "left behind: " << fs::directory_iterator(parent)->path();
  }
  auto ok = SaveModel(model, ModelDir(), {.output_dir = (parent / "model").string()});
  EXPECT_TRUE(ok.ok()) << ok.status();
  fs::remove_all(parent);
}

}  // namespace
}  // namespace quantserve::loader

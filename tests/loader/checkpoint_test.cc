#include "loader/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/env.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/loader/safetensors_test_util.h"

namespace quantserve::loader {
namespace {

using ::quantserve::loader::testing::Bytes;
using ::quantserve::loader::testing::ExpectError;
using ::quantserve::loader::testing::FaultInjectingEnv;
using ::quantserve::loader::testing::MakeSafetensorsBytes;
using ::quantserve::loader::testing::SafetensorsBuilder;

constexpr char kDir[] = "/models/tiny";
const std::string kIndex = std::string(kDir) + "/model.safetensors.index.json";

std::string P(const std::string& name) { return std::string(kDir) + "/" + name; }

std::string IndexJson(const std::map<std::string, std::string>& weight_map) {
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  return index.dump(2);
}

std::string Shard1() {
  SafetensorsBuilder b;
  b.AddF32("model.layers.0.w", {2}, {1, 2}).AddF32("model.embed", {1}, {3});
  return b.Build();
}

std::string Shard2() {
  SafetensorsBuilder b;
  b.Add("lm_head.weight", "I32", {2}, Bytes<int32_t>({5, 6})).AddF32("model.norm", {}, {4});
  return b.Build();
}

const std::map<std::string, std::string> kWeightMap = {
    {"model.layers.0.w", "model-00001-of-00002.safetensors"},
    {"model.embed", "model-00001-of-00002.safetensors"},
    {"lm_head.weight", "model-00002-of-00002.safetensors"},
    {"model.norm", "model-00002-of-00002.safetensors"},
};

// A two-shard checkpoint, with `overrides` replacing or adding files (an empty value deletes).
std::map<std::string, std::string> ShardedFiles(
    const std::map<std::string, std::string>& overrides = {}) {
  std::map<std::string, std::string> files = {
      {P("config.json"), "{}"},
      {kIndex, IndexJson(kWeightMap)},
      {P("model-00001-of-00002.safetensors"), Shard1()},
      {P("model-00002-of-00002.safetensors"), Shard2()},
  };
  for (const auto& [path, bytes] : overrides) {
    if (bytes.empty()) {
      files.erase(path);
    } else {
      files[path] = bytes;
    }
  }
  return files;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> OpenFiles(std::map<std::string, std::string> files) {
  std::unique_ptr<common::Env> env = common::NewMemEnv(std::move(files));
  return Checkpoint::Open(env.get(), kDir);
}

// ---------------------------------------------------------------------------------------
// Layouts

TEST(CheckpointTest, OpensSingleFile) {
  SafetensorsBuilder b;
  b.AddF32("z.weight", {2}, {1, 2}).AddF32("a.weight", {1}, {3});
  auto ckpt = OpenFiles({{P("model.safetensors"), b.Build()}, {P("config.json"), "{}"}});
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  EXPECT_EQ(c.layout(), Checkpoint::Layout::kSingleFile);
  EXPECT_EQ(c.dir(), kDir);
  EXPECT_EQ(c.source_path(), P("model.safetensors"));
  ASSERT_EQ(c.shards().size(), 1u);
  ASSERT_EQ(c.num_tensors(), 2u);
  EXPECT_EQ(c.tensors()[0].name(), "z.weight");  // file order, not name order
  EXPECT_EQ(c.tensors()[1].name(), "a.weight");
  EXPECT_EQ(c.total_tensor_bytes(), 12u);
  const CheckpointTensor* a = c.FindTensor("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shard, c.shards()[0].get());
  EXPECT_EQ(a->shard_index, 0u);
  float value;
  std::memcpy(&value, a->data().data(), sizeof(value));
  EXPECT_EQ(value, 3.0f);
}

TEST(CheckpointTest, SingleFileWinsOverIndex) {
  SafetensorsBuilder b;
  b.AddF32("only", {1}, {1});
  auto files = ShardedFiles({{P("model.safetensors"), b.Build()}});
  auto ckpt = OpenFiles(files);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->layout(), Checkpoint::Layout::kSingleFile);
  EXPECT_EQ((*ckpt)->num_tensors(), 1u);
}

TEST(CheckpointTest, OpensShardedCheckpoint) {
  auto ckpt = OpenFiles(ShardedFiles());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  EXPECT_EQ(c.layout(), Checkpoint::Layout::kSharded);
  EXPECT_EQ(c.source_path(), kIndex);
  ASSERT_EQ(c.shards().size(), 2u);
  EXPECT_EQ(c.shards()[0]->path(), P("model-00001-of-00002.safetensors"));
  EXPECT_EQ(c.shards()[1]->path(), P("model-00002-of-00002.safetensors"));
  // Streaming order: shard by shard, each by offset.
  std::vector<std::string> names;
  std::vector<size_t> shard_of;
  for (const CheckpointTensor& t : c.tensors()) {
    names.push_back(t.name());
    shard_of.push_back(t.shard_index);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.0.w", "model.embed", "lm_head.weight",
                                             "model.norm"}));
  EXPECT_EQ(shard_of, (std::vector<size_t>{0, 0, 1, 1}));
  EXPECT_EQ(c.total_tensor_bytes(), 8u + 4u + 8u + 4u);

  auto head = c.GetTensorData("lm_head.weight");
  ASSERT_TRUE(head.ok());
  int32_t v[2];
  std::memcpy(v, head->data(), sizeof(v));
  EXPECT_EQ(v[1], 6);
  EXPECT_EQ(c.FindTensor("model.norm")->info->shape.size(), 0u);
}

TEST(CheckpointTest, UnknownTensorIsNotFound) {
  auto ckpt = OpenFiles(ShardedFiles());
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ((*ckpt)->FindTensor("nope"), nullptr);
  ExpectError((*ckpt)->GetTensor("nope").status(), absl::StatusCode::kNotFound, {kDir, "\"nope\""});
  ExpectError((*ckpt)->GetTensorData("nope").status(), absl::StatusCode::kNotFound,
              {kDir, "\"nope\""});
}

TEST(CheckpointTest, UnreferencedSafetensorsFilesAreIgnored) {
  auto ckpt = OpenFiles(ShardedFiles({{P("adapter_model.safetensors"), "garbage"}}));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->shards().size(), 2u);
}

// ---------------------------------------------------------------------------------------
// What is refused

TEST(CheckpointTest, PickleOnlyDirectoryIsFailedPrecondition) {
  auto ckpt = OpenFiles({{P("pytorch_model.bin"), "pickle"}, {P("config.json"), "{}"}});
  ExpectError(ckpt.status(), absl::StatusCode::kFailedPrecondition,
              {kDir,
               "pickled checkpoints are not loaded (no code execution from model files); convert "
               "to safetensors",
               "pytorch_model.bin"});
}

TEST(CheckpointTest, OtherPickleNamesAreFailedPrecondition) {
  for (const char* name : {"weights.pt", "model.pth", "last.ckpt", "pytorch_model-00001.bin",
                           "pytorch_model.bin.index.json"}) {
    SCOPED_TRACE(name);
    auto ckpt = OpenFiles({{P(name), "x"}});
    ExpectError(ckpt.status(), absl::StatusCode::kFailedPrecondition, {"pickled", name});
  }
}

TEST(CheckpointTest, NoWeightsIsNotFound) {
  auto ckpt = OpenFiles({{P("config.json"), "{}"}, {P("tokenizer.json"), "{}"}});
  ExpectError(ckpt.status(), absl::StatusCode::kNotFound,
              {kDir, "model.safetensors", "model.safetensors.index.json"});
}

TEST(CheckpointTest, MissingDirectoryIsNotFound) {
  auto ckpt = OpenFiles({{"/models/other/model.safetensors", "x"}});
  ExpectError(ckpt.status(), absl::StatusCode::kNotFound, {kDir, "not a directory"});
}

TEST(CheckpointTest, DirectoryThatIsAFileIsNotFound) {
  auto ckpt = OpenFiles({{kDir, "x"}});
  ExpectError(ckpt.status(), absl::StatusCode::kNotFound, {kDir});
}

TEST(CheckpointTest, NullEnvIsInvalidArgument) {
  EXPECT_EQ(Checkpoint::Open(nullptr, kDir).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, CorruptSingleFileIsDataLossNamingFileAndTensor) {
  auto ckpt =
      OpenFiles({{P("model.safetensors"),
                  MakeSafetensorsBytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
                                       std::string(4, '\0'))}});
  ExpectError(ckpt.status(), absl::StatusCode::kDataLoss,
              {P("model.safetensors"), "tensor \"w\"", "needs 8 bytes"});
}

// ---------------------------------------------------------------------------------------
// Sharded rules

TEST(CheckpointTest, MissingShardIsDataLoss) {
  auto ckpt = OpenFiles(ShardedFiles({{P("model-00002-of-00002.safetensors"), ""}}));
  ExpectError(ckpt.status(), absl::StatusCode::kDataLoss,
              {kIndex, "model-00002-of-00002.safetensors", "is missing", "tensor \""});
}

TEST(CheckpointTest, CorruptShardIsDataLossNamingShardAndTensor) {
  SafetensorsBuilder bad;
  bad.AddF32("lm_head.weight", {2}, {1, 2}).AddF32("model.norm", {}, {4});
  bad.header()["model.norm"]["dtype"] = "F99";
  auto ckpt = OpenFiles(ShardedFiles({{P("model-00002-of-00002.safetensors"), bad.Build()}}));
  ExpectError(ckpt.status(), absl::StatusCode::kDataLoss,
              {P("model-00002-of-00002.safetensors"), "tensor \"model.norm\"", "F99"});
}

TEST(CheckpointTest, TensorInIndexButNotInShardIsDataLoss) {
  std::map<std::string, std::string> map = kWeightMap;
  map["model.ghost"] = "model-00001-of-00002.safetensors";
  auto ckpt = OpenFiles(ShardedFiles({{kIndex, IndexJson(map)}}));
  ExpectError(
      ckpt.status(), absl::StatusCode::kDataLoss,
      {kIndex, "tensor \"model.ghost\"", "model-00001-of-00002.safetensors", "no such tensor"});
}

TEST(CheckpointTest, TensorIndexedToWrongShardIsDataLoss) {
  std::map<std::string, std::string> map = kWeightMap;
  map["model.norm"] = "model-00001-of-00002.safetensors";
  auto ckpt = OpenFiles(ShardedFiles({{kIndex, IndexJson(map)}}));
  ExpectError(ckpt.status(), absl::StatusCode::kDataLoss,
              {kIndex, "tensor \"model.norm\"", "no such tensor"});
}

TEST(CheckpointTest, TensorInShardButNotInIndexIsDataLoss) {
  std::map<std::string, std::string> map = kWeightMap;
  map.erase("model.embed");
  auto ckpt = OpenFiles(ShardedFiles({{kIndex, IndexJson(map)}}));
  ExpectError(ckpt.status(), absl::StatusCode::kDataLoss,
              {kIndex, "tensor \"model.embed\"", "not listed in weight_map"});
}

TEST(CheckpointTest, TensorInTwoShardsIsDataLoss) {
  SafetensorsBuilder dup;
  dup.Add("lm_head.weight", "I32", {2}, Bytes<int32_t>({5, 6}))
      .AddF32("model.norm", {}, {4})
      .AddF32("model.embed", {1}, {3});
  auto ckpt = OpenFiles(ShardedFiles({{P("model-00002-of-00002.safetensors"), dup.Build()}}));
  ExpectError(ckpt.status(), absl::StatusCode::kDataLoss,
              {kIndex, "tensor \"model.embed\"", "two shards", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors"});
}

TEST(CheckpointTest, PathTraversalInShardNameIsDataLoss) {
  for (const char* shard :
       {"../evil.safetensors", "/etc/evil.safetensors", "sub/x.safetensors", "..", ".", "",
        "config.json", ".safetensors", "a\\b.safetensors", "..\\x.safetensors"}) {
    SCOPED_TRACE(shard);
    std::map<std::string, std::string> map = kWeightMap;
    map["model.norm"] = shard;
    auto ckpt =
        OpenFiles(ShardedFiles({{kIndex, IndexJson(map)}, {"/models/evil.safetensors", Shard2()}}));
    ExpectError(ckpt.status(), absl::StatusCode::kDataLoss,
                {kIndex, "tensor \"model.norm\"", "not a plain *.safetensors file name"});
  }
}

TEST(CheckpointTest, MalformedIndexIsDataLoss) {
  struct Case {
    std::string index;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"not json", "not valid JSON"},
      {R"({"weight_map":{"model.norm":"x.safetensors"}})" + std::string(1, '\0') + "junk",
       "NUL byte"},
      {"[]", "not a JSON object"},
      {R"({"metadata":{}})", "\"weight_map\" is missing"},
      {R"({"weight_map":["a"]})", "\"weight_map\" is missing or not a JSON object"},
      {R"({"weight_map":{}})", "\"weight_map\" is empty"},
      {R"({"weight_map":{"model.norm":3}})", "tensor \"model.norm\": shard is not a string"},
      {R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
       R"("a":"model-00002-of-00002.safetensors"}})",
       "duplicate key \"a\""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.index);
    auto ckpt = OpenFiles(ShardedFiles({{kIndex, c.index}}));
    ExpectError(ckpt.status(), absl::StatusCode::kDataLoss, {kIndex, c.expected});
  }
}

TEST(CheckpointTest, IndexReadFailureIsPropagated) {
  std::unique_ptr<common::Env> mem = common::NewMemEnv(ShardedFiles());
  FaultInjectingEnv env(mem.get());
  env.Fail(FaultInjectingEnv::Op::kRead, kIndex,
           absl::UnavailableError("read \"" + kIndex + "\": I/O error"));
  ExpectError(Checkpoint::Open(&env, kDir).status(), absl::StatusCode::kUnavailable, {kIndex});
}

TEST(CheckpointTest, ShardMapFailureIsPropagated) {
  std::unique_ptr<common::Env> mem = common::NewMemEnv(ShardedFiles());
  FaultInjectingEnv env(mem.get());
  const std::string shard = P("model-00002-of-00002.safetensors");
  env.Fail(FaultInjectingEnv::Op::kRegion, shard,
           absl::ResourceExhaustedError("mmap \"" + shard + "\": Cannot allocate memory"));
  ExpectError(Checkpoint::Open(&env, kDir).status(), absl::StatusCode::kResourceExhausted, {shard});
}

TEST(CheckpointTest, OversizedIndexIsDataLoss) {
  std::unique_ptr<common::Env> mem = common::NewMemEnv(ShardedFiles());
  // Report a huge size without allocating one.
  class HugeIndexEnv : public FaultInjectingEnv {
   public:
    using FaultInjectingEnv::FaultInjectingEnv;
    absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
      return path == kIndex ? Checkpoint::kMaxIndexBytes + 1 : FaultInjectingEnv::GetFileSize(path);
    }
  } env(mem.get());
  ExpectError(Checkpoint::Open(&env, kDir).status(), absl::StatusCode::kDataLoss,
              {kIndex, "over the limit"});
}

// ---------------------------------------------------------------------------------------
// Real files through the POSIX Env

class CheckpointDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qs_checkpoint_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(::mkdir((dir_ + "/blobs").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((dir_ + "/model").c_str(), 0755), 0);
  }
  void TearDown() override {
    for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) {
      ::unlink(it->c_str());
    }
    ::rmdir((dir_ + "/blobs").c_str());
    ::rmdir((dir_ + "/model").c_str());
    ::rmdir(dir_.c_str());
  }
  void Write(const std::string& rel, const std::string& bytes) {
    std::ofstream(dir_ + "/" + rel, std::ios::binary) << bytes;
    paths_.push_back(dir_ + "/" + rel);
  }
  void Symlink(const std::string& target, const std::string& rel) {
    ASSERT_EQ(::symlink(target.c_str(), (dir_ + "/" + rel).c_str()), 0);
    paths_.push_back(dir_ + "/" + rel);
  }

  std::string dir_;
  std::vector<std::string> paths_;
};

TEST_F(CheckpointDiskTest, OpensShardedCheckpointWithSymlinkedShards) {
  // The Hugging Face cache layout: snapshot files are symlinks into blobs/.
  Write("blobs/aaa", Shard1());
  Write("blobs/bbb", Shard2());
  Write("model/model.safetensors.index.json", IndexJson(kWeightMap));
  Symlink("../blobs/aaa", "model/model-00001-of-00002.safetensors");
  Symlink("../blobs/bbb", "model/model-00002-of-00002.safetensors");
  auto ckpt = Checkpoint::Open(common::Env::Default(), dir_ + "/model");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->num_tensors(), 4u);
  auto embed = (*ckpt)->GetTensorData("model.embed");
  ASSERT_TRUE(embed.ok());
  float value;
  std::memcpy(&value, embed->data(), sizeof(value));
  EXPECT_EQ(value, 3.0f);
}

TEST_F(CheckpointDiskTest, BinOnlyDirectoryOnDiskIsFailedPrecondition) {
  Write("model/pytorch_model.bin", "PK");
  Write("model/config.json", "{}");
  ExpectError(Checkpoint::Open(common::Env::Default(), dir_ + "/model").status(),
              absl::StatusCode::kFailedPrecondition, {"pickled", "pytorch_model.bin"});
}

TEST_F(CheckpointDiskTest, MissingShardOnDiskIsDataLoss) {
  Write("model/model.safetensors.index.json", IndexJson(kWeightMap));
  Write("model/model-00001-of-00002.safetensors", Shard1());
  ExpectError(Checkpoint::Open(common::Env::Default(), dir_ + "/model").status(),
              absl::StatusCode::kDataLoss, {"model-00002-of-00002.safetensors", "is missing"});
}

}  // namespace
}  // namespace quantserve::loader

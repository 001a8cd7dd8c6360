// Cross-check against the reference writers: files made by Python's safetensors (0.8.0) and
// huggingface_hub's sharded writer must open, and every tensor's dtype, shape and bytes must
// match what the reference reader and torch report. The files come from
// tests/fixtures/make_safetensors_samples.py (run as a CTest fixture before this test).

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "common/env.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"
#include "loader/safetensors_file.h"
#include "nlohmann/json.hpp"

namespace quantserve::loader {
namespace {

using Json = nlohmann::json;

std::string SamplesDir() {
  const char* env = std::getenv("QS_FIXTURES_DIR");
  std::string root = (env != nullptr && *env != '\0') ? env : QS_FIXTURES_DIR_DEFAULT;
  return root + "/safetensors";
}

class SafetensorsInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string manifest_path = SamplesDir() + "/manifest.json";
    absl::StatusOr<std::string> text = common::Env::Default()->ReadFileToString(manifest_path);
    ASSERT_TRUE(text.ok()) << "missing fixtures (" << text.status() << "); generate them with: "
                           << ".venv/bin/python tests/fixtures/make_safetensors_samples.py "
                           << "(honours $QS_FIXTURES_DIR), or run ctest, which does it first";
    manifest_ = Json::parse(*text);
  }

  Json manifest_;
};

std::string Hex(absl::Span<const uint8_t> bytes) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::vector<int64_t> Shape(const Json& shape) { return shape.get<std::vector<int64_t>>(); }

TEST_F(SafetensorsInteropTest, SingleFilesMatchTheReferenceReader) {
  ASSERT_FALSE(manifest_["files"].empty());
  for (const auto& [file_name, expected] : manifest_["files"].items()) {
    SCOPED_TRACE(file_name);
    const std::string path = SamplesDir() + "/" + file_name;
    auto file = SafetensorsFile::Open(common::Env::Default(), path);
    ASSERT_TRUE(file.ok()) << file.status();

    const auto expected_metadata = expected["metadata"].get<std::map<std::string, std::string>>();
    EXPECT_EQ((*file)->metadata(), expected_metadata);
    ASSERT_EQ((*file)->tensors().size(), expected["tensors"].size());
    uint64_t bytes = 0;
    for (const auto& [name, t] : expected["tensors"].items()) {
      SCOPED_TRACE(name);
      const TensorInfo* info = (*file)->FindTensor(name);
      ASSERT_NE(info, nullptr);
      EXPECT_EQ(DtypeName(info->dtype), t["dtype"].get<std::string>());
      EXPECT_EQ(info->shape, Shape(t["shape"]));
      EXPECT_EQ(Hex((*file)->TensorData(*info)), t["hex"].get<std::string>());
      bytes += info->byte_size();
    }
    EXPECT_EQ((*file)->tensor_bytes(), bytes);
  }
}

TEST_F(SafetensorsInteropTest, ShardedCheckpointMatchesTheReferenceWriter) {
  const Json& expected = manifest_["checkpoints"]["sharded"];
  ASSERT_TRUE(expected.is_object());
  auto ckpt = Checkpoint::Open(common::Env::Default(), SamplesDir() + "/sharded");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->layout(), Checkpoint::Layout::kSharded);

  std::vector<std::string> shard_paths;
  for (const auto& shard : (*ckpt)->shards()) {
    shard_paths.push_back(shard->path());
  }
  std::vector<std::string> expected_paths;
  for (const Json& shard : expected["shards"]) {
    expected_paths.push_back(SamplesDir() + "/sharded/" + shard.get<std::string>());
  }
  EXPECT_EQ(shard_paths, expected_paths);

  ASSERT_EQ((*ckpt)->num_tensors(), expected["tensors"].size());
  for (const auto& [name, t] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    const CheckpointTensor* tensor = (*ckpt)->FindTensor(name);
    ASSERT_NE(tensor, nullptr);
    EXPECT_EQ(tensor->shard->path(), SamplesDir() + "/sharded/" + t["shard"].get<std::string>());
    EXPECT_EQ(DtypeName(tensor->info->dtype), t["dtype"].get<std::string>());
    EXPECT_EQ(tensor->info->shape, Shape(t["shape"]));
    EXPECT_EQ(Hex(tensor->data()), t["hex"].get<std::string>());
  }
  // Streaming order never goes back to an earlier shard.
  size_t last_shard = 0;
  for (const CheckpointTensor& t : (*ckpt)->tensors()) {
    EXPECT_GE(t.shard_index, last_shard);
    last_shard = t.shard_index;
  }
}

}  // namespace
}  // namespace quantserve::loader

#pragma once
// Helpers for the pre-quantized checkpoint tests: the cases written by
// tests/fixtures/make_prequant_*.py (layout in tests/fixtures/prequant_common.py), loading
// them, comparing our inference with the library's, and the save -> reload round trip.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/env.h"
#include "loader/load_pipeline.h"
#include "loader/model_saver.h"
#include "tests/quant/quant_testing.h"

namespace quantserve::testing {

// Shared by the per-method pre-quantized tests.
using TensorMap = std::map<std::string, at::Tensor>;

// Every tensor of a safetensors file (a failure when it cannot be read).
inline TensorMap ReadTensors(const std::string& path) {
  auto t = loader::ReadSafetensorsFile(common::Env::Default(), path);
  EXPECT_TRUE(t.ok()) << path << ": " << t.status();
  return t.ok() ? *t : TensorMap{};
}

// Same dtype, shape and bytes.
inline bool BitEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor x = a.contiguous().cpu(), y = b.contiguous().cpu();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

inline std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// The module tree's registered tensors by dotted name (codes kept only by a packed kernel
// rebuilt).
inline TensorMap ParamState(const models::Module& root) {
  TensorMap out;
  for (auto& [name, t] : quant::ResidentParameters(root)) out.emplace(name, std::move(t));
  return out;
}

// Same names, and every tensor bit for bit (the first 5 differences reported).
inline void ExpectSameTensors(const TensorMap& ours, const TensorMap& theirs,
                              const std::string& what) {
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

// The evaluation windows a reference.json was scored on.
inline nlohmann::json Windows(const nlohmann::json& ref) {
  nlohmann::json all = QuantWindows()["windows"], used = nlohmann::json::array();
  for (int i = 0; i < ref["n_windows"].get<int>(); ++i) used.push_back(all[i]);
  return used;
}

// OUT/prequant/<method>/<case>/ and its reference.json / checkpoint/.
inline std::string PrequantCaseDir(const std::string& method, const std::string& name) {
  return FixturesDir() + "/prequant/" + method + "/" + name;
}
inline nlohmann::json PrequantReference(const std::string& method, const std::string& name) {
  return ReadJsonFile(PrequantCaseDir(method, name) + "/reference.json");
}
inline std::string PrequantCheckpoint(const std::string& method, const std::string& name) {
  return PrequantCaseDir(method, name) + "/checkpoint";
}

// Loads a model directory as LoadModel would (`request_config` as the request's
// quantization_config, "" for none).
inline absl::StatusOr<loader::LoadedModel> LoadModelDir(const std::string& dir,
                                                        const std::string& request_config = "",
                                                        const std::string& dtype = "auto") {
  loader::LoadPipelineOptions o;
  o.model_dir = dir;
  o.quantization_config_json = request_config;
  o.dtype = dtype;
  return loader::RunLoadPipeline(o, nullptr);
}

// `n` argmax tokens after `prompt`, each from a full forward of the sequence so far (as
// prequant_common.greedy_tokens does), ignoring EOS.
inline std::vector<int64_t> GreedyTokens(const models::LlamaForCausalLM& model,
                                         std::vector<int64_t> ids, int n) {
  const size_t prompt = ids.size();
  for (int i = 0; i < n; ++i) {
    at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);
    models::KvCache cache = model.NewCache(static_cast<int64_t>(ids.size()));
    at::Tensor logits = model.Forward(t, cache, /*last_only=*/true).to(at::kFloat);
    ids.push_back(logits.reshape({-1}).argmax().item<int64_t>());
  }
  return std::vector<int64_t>(ids.begin() + static_cast<std::ptrdiff_t>(prompt), ids.end());
}

// Our logprobs on the reference's windows within its logprob_atol (or `atol` when >= 0) of
// the library's, and the same greedy tokens. Returns the largest logprob difference.
inline double ExpectMatchesLibrary(const loader::LoadedModel& model, const nlohmann::json& ref,
                                   double atol = -1) {
  if (atol < 0) atol = ref.at("logprob_atol").get<double>();
  nlohmann::json windows = QuantWindows()["windows"];
  const int n = ref.at("n_windows").get<int>();
  nlohmann::json used = nlohmann::json::array();
  for (int i = 0; i < n; ++i) used.push_back(windows[i]);
  at::Tensor ours = TargetLogprobs(*model.causal_lm, used);
  at::Tensor theirs = JsonMatrix(ref.at("target_logprobs"));
  const double diff = (ours - theirs).abs().max().item<double>();
  EXPECT_LE(diff, atol) << ref.at("method") << "/" << ref.at("case") << ": ppl ours "
                        << Perplexity(ours) << " library " << ref.at("perplexity");
  const auto greedy = GreedyTokens(*model.causal_lm, ref.at("prompt").get<std::vector<int64_t>>(),
                                   static_cast<int>(ref.at("greedy").size()));
  EXPECT_EQ(greedy, ref.at("greedy").get<std::vector<int64_t>>())
      << ref.at("method") << "/" << ref.at("case") << ": greedy tokens differ";
  return diff;
}

// A fresh empty directory under the test's temp dir.
inline std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path p = std::filesystem::path(base ? base : "/tmp") /
                            ("qs_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

// A copy (in a fresh temp dir) of fixture case `name`'s checkpoint with `edit` applied to the
// tensors of its model.safetensors. Returns the directory.
inline std::string CorruptCopy(const std::string& method, const std::string& name,
                               const std::string& tag,
                               const std::function<void(TensorMap&)>& edit) {
  const std::string dir = TempDir(method + "_corrupt_" + tag);
  std::filesystem::copy(FixturesDir() + "/prequant/" + method + "/" + name + "/checkpoint", dir,
                        std::filesystem::copy_options::recursive);
  TensorMap tensors = ReadTensors(dir + "/model.safetensors");
  edit(tensors);
  std::vector<std::pair<std::string, at::Tensor>> ordered(tensors.begin(), tensors.end());
  const absl::Status s = loader::WriteSafetensorsFile(dir + "/model.safetensors", ordered);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

// Saves `model` (loaded from `source_dir`) into a new directory and loads it back; the
// reloaded model must hold every saved tensor bit for bit. Returns the reloaded model.
inline absl::StatusOr<loader::LoadedModel> SaveAndReload(loader::LoadedModel& model,
                                                         const std::string& source_dir,
                                                         const std::string& name,
                                                         int64_t max_shard_bytes = 0) {
  loader::SaveModelOptions o;
  o.output_dir = TempDir(name);
  if (max_shard_bytes > 0) o.max_shard_bytes = max_shard_bytes;
  auto saved = loader::SaveModel(model, source_dir, o);
  if (!saved.ok()) return saved.status();
  return LoadModelDir(o.output_dir, "", loader::TorchDtypeName(model.dtype));
}

}  // namespace quantserve::testing

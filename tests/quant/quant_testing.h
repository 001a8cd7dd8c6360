#pragma once
// Helpers for the quantization tests: the reference cases written by
// tests/fixtures/make_quant_*.py (see tests/fixtures/quant_common.py for the layout), loading
// the default model with a quantization_config, and comparing against the references.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/env.h"
#include "loader/load_pipeline.h"
#include "models/layers.h"
#include "models/llama.h"
#include "quant/linear_quantizer.h"
#include "quant/quantized_linear.h"
#include "tests/testing/fixtures.h"

namespace quantserve::testing {

inline std::string DefaultModelDir() { return SourceDir() + "/assets/models/kjv-llama"; }

// OUT/quant/windows.json: {"windows": [[ids]], "float_perplexity", "float_target_logprobs"}.
inline nlohmann::json QuantWindows() { return ReadJsonFile(FixturesDir() + "/quant/windows.json"); }

// OUT/quant/<method>/<case>/.
inline std::string QuantCaseDir(const std::string& method, const std::string& name) {
  return FixturesDir() + "/quant/" + method + "/" + name;
}
inline nlohmann::json QuantCaseReference(const std::string& method, const std::string& name) {
  return ReadJsonFile(QuantCaseDir(method, name) + "/reference.json");
}

// The default model loaded (quantized at load) with `quantization_config_json`.
inline absl::StatusOr<loader::LoadedModel> LoadDefaultModel(
    const std::string& quantization_config_json, const std::string& dtype = "float32") {
  loader::LoadPipelineOptions o;
  o.model_dir = DefaultModelDir();
  o.quantization_config_json = quantization_config_json;
  o.dtype = dtype;
  return loader::RunLoadPipeline(o, nullptr);
}

// [n_windows, T-1] float32: log p(ids[t+1] | ids[..t]) per window, like quant_common.py.
inline at::Tensor TargetLogprobs(const models::LlamaForCausalLM& model,
                                 const nlohmann::json& windows) {
  std::vector<at::Tensor> rows;
  for (const auto& w : windows) {
    std::vector<int64_t> ids = w.get<std::vector<int64_t>>();
    at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);
    models::KvCache cache = model.NewCache(static_cast<int64_t>(ids.size()));
    at::Tensor logits = model.Forward(t, cache, /*last_only=*/false).to(at::kFloat);
    at::Tensor lp = at::log_softmax(logits, -1);
    at::Tensor next = t[0].slice(0, 1).unsqueeze(1);
    rows.push_back(lp.slice(0, 0, lp.size(0) - 1).gather(1, next).squeeze(1));
  }
  return at::stack(rows);
}

inline at::Tensor JsonMatrix(const nlohmann::json& rows) {
  std::vector<at::Tensor> out;
  for (const auto& r : rows) out.push_back(at::tensor(r.get<std::vector<double>>(), at::kDouble));
  return at::stack(out).to(at::kFloat);
}

inline double Perplexity(const at::Tensor& logprobs) {
  return std::exp(-logprobs.to(at::kDouble).mean().item<double>());
}

// Every tensor of `reference_path` against the model parameter of the same name: same dtype,
// shape and (for atol == 0) bits. Returns the number of tensors compared.
inline int ExpectStateMatches(const models::Module& root, const std::string& reference_path,
                              double atol = 0.0) {
  auto ref = loader::ReadSafetensorsFile(common::Env::Default(), reference_path);
  EXPECT_TRUE(ref.ok()) << ref.status();
  if (!ref.ok()) return 0;
  std::map<std::string, at::Tensor> params;
  for (auto& [name, t] : quant::ResidentParameters(root)) params.emplace(name, std::move(t));
  int compared = 0;
  for (const auto& [name, want] : *ref) {
    auto it = params.find(name);
    if (it == params.end()) {
      ADD_FAILURE() << "model has no parameter " << name;
      continue;
    }
    at::Tensor got = it->second.cpu();
    ++compared;
    EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), want.sizes()) << name;
    if (got.scalar_type() != want.scalar_type() || got.sizes() != want.sizes()) continue;
    if (atol == 0.0) {  // bitwise, element by element
      const int64_t elem = static_cast<int64_t>(got.element_size());
      at::Tensor a = at::empty({want.numel() * elem}, at::kByte);
      at::Tensor b = at::empty({want.numel() * elem}, at::kByte);
      std::memcpy(a.data_ptr(), got.contiguous().data_ptr(), a.numel());
      std::memcpy(b.data_ptr(), want.contiguous().data_ptr(), b.numel());
      const int64_t bad =
          a.view({-1, elem}).ne(b.view({-1, elem})).any(1).sum().item<int64_t>();
      EXPECT_EQ(bad, 0) << name << ": " << bad << " of " << want.numel() << " elements differ";
    } else {
      const double d = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
      EXPECT_LE(d, atol) << name;
    }
  }
  return compared;
}

// The quantizer converted exactly the reference's "converted_modules" (in model order) and
// every other Linear of `root` is still a plain DenseLinear: the reference's "skipped_modules".
inline void ExpectConversionMatches(const quant::LinearQuantizer& quantizer, models::Module& root,
                                    const nlohmann::json& ref) {
  EXPECT_EQ(quantizer.converted_modules(),
            ref["converted_modules"].get<std::vector<std::string>>());
  std::set<std::string> skipped;
  for (const auto& m : root.NamedModules()) {
    if (dynamic_cast<models::DenseLinear*>(m.module) != nullptr) skipped.insert(m.name);
  }
  const auto want = ref["skipped_modules"].get<std::vector<std::string>>();
  EXPECT_EQ(skipped, std::set<std::string>(want.begin(), want.end()));
}

}  // namespace quantserve::testing

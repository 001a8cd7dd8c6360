#include "quant/methods/compressed_tensors/compressed_tensors_config.h"

#include <gtest/gtest.h>

namespace quantserve::quant {
namespace {

using Config = CompressedTensorsConfig;

Config Parse(const std::string& json) {
  auto c = Config::Parse(json);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : Config{};
}

void ExpectInvalid(const std::string& json, const std::string& message) {
  auto c = Config::Parse(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_EQ(c.status().message(), message);
}

// A config with one group "g" whose weights are `weights` (a JSON object).
std::string Weights(const std::string& weights) {
  return R"({"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": )" +
         weights + "}}}";
}

// The normalized JSON of weights `weights` in group "g".
std::string WeightsJson(const std::string& weights) {
  Config c = Parse(Weights(weights));
  if (!c.quantization || c.quantization->config_groups.empty() ||
      !c.quantization->config_groups[0].second.weights) {
    return "";
  }
  return c.quantization->config_groups[0].second.weights->ToJson().dump();
}

const std::string kW = "quantization_config.config_groups.g.weights.";

// ---- QuantizationConfig (transformers' CompressedTensorsConfig wrapper) ----

// Golden strings: json.dumps(CompressedTensorsConfig.from_dict(cfg).to_dict(),
// separators=(",", ":")) from the pinned transformers 5.23 + compressed-tensors 0.20.
TEST(CompressedTensorsConfigTest, NoGroupsAndNoKvCacheSchemeIsNotQuantized) {
  Config c = Parse(R"({"quant_method": "compressed-tensors"})");
  EXPECT_FALSE(c.quantization.has_value());
  EXPECT_FALSE(c.is_quantized());
  EXPECT_EQ(c.ToJson(), R"({"quant_method":"compressed-tensors"})");
  // Falsy config_groups / kv_cache_scheme: nothing else is validated.
  c = Parse(R"({"config_groups": {}, "kv_cache_scheme": {}, "format": null, "ignore": 3})");
  EXPECT_FALSE(c.quantization.has_value());
  EXPECT_EQ(c.ToJson(), R"({"quant_method":"compressed-tensors"})");
}

TEST(CompressedTensorsConfigTest, LlmCompressorConfigNormalizesLikeTransformers) {
  Config c = Parse(
      R"({"quant_method": "compressed-tensors",
          "config_groups": {"group_0": {"targets": ["Linear"],
              "weights": {"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group",
                          "group_size": 128, "dynamic": false, "actorder": "weight",
                          "observer": "minmax"},
              "input_activations": null, "output_activations": null}},
          "format": "pack-quantized", "quantization_status": "compressed", "ignore": ["lm_head"],
          "sparsity_config": {}, "kv_cache_scheme": null, "global_compression_ratio": 1.5,
          "version": "0.9.1"})");
  EXPECT_TRUE(c.is_quantized());
  EXPECT_TRUE(c.is_quantization_compressed());
  EXPECT_FALSE(c.has_fp8_modules());
  EXPECT_EQ(
      c.ToJson(),
      R"({"config_groups":{"group_0":{"targets":["Linear"],"weights":{"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false,"actorder":"weight","observer":"minmax"},"input_activations":null,"output_activations":null,"format":null}},"quant_method":"compressed-tensors","kv_cache_scheme":null,"format":"pack-quantized","quantization_status":"compressed","global_compression_ratio":1.5,"ignore":["lm_head"],"moe_sparsity_config":null})");
}

TEST(CompressedTensorsConfigTest, PresetGroupsExpandAndKeepTheirOrder) {
  Config c = Parse(
      R"({"quant_method": "compressed-tensors",
          "config_groups": {"NVFP4": ["Linear"], "FP8_BLOCK": ["re:.*mlp.*"]},
          "ignore": ["lm_head", "re:.*gate$"]})");
  EXPECT_TRUE(c.has_fp8_modules());
  EXPECT_EQ(
      c.ToJson(),
      R"({"config_groups":{"NVFP4":{"targets":["Linear"],"weights":{"num_bits":4,"type":"float","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":false,"scale_dtype":"torch.float8_e4m3fn"},"input_activations":{"num_bits":4,"type":"float","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":"local","scale_dtype":"torch.float8_e4m3fn","observer":"static_minmax"},"output_activations":null,"format":null},"FP8_BLOCK":{"targets":["re:.*mlp.*"],"weights":{"num_bits":8,"type":"float","symmetric":true,"group_size":null,"strategy":"block","block_structure":[128,128],"dynamic":false},"input_activations":{"num_bits":8,"type":"float","symmetric":true,"group_size":128,"strategy":"group","dynamic":true},"output_activations":null,"format":null}},"quant_method":"compressed-tensors","kv_cache_scheme":null,"format":"dense","quantization_status":"initialized","global_compression_ratio":null,"ignore":["lm_head","re:.*gate$"],"moe_sparsity_config":null})");
  // The preset is looked up upper-cased.
  EXPECT_EQ(Parse(R"({"config_groups": {"w4a16": ["Linear"]}})")
                .quantization->config_groups[0]
                .second.weights->num_bits,
            4);
}

TEST(CompressedTensorsConfigTest, EveryPresetMatchesCompressedTensors) {
  // json.dumps(preset_name_to_scheme(name, ["Linear"]).model_dump()) for each PRESET_SCHEMES.
  // clang-format off
  const std::vector<std::pair<std::string, std::string>> kGolden = {
      {"UNQUANTIZED", R"({"targets":["Linear"],"weights":null,"input_activations":null,"output_activations":null,"format":null})"},
      {"W4A16_ASYM", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"int","symmetric":false,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null})"},
      {"W8A8", R"({"targets":["Linear"],"weights":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"channel","dynamic":false},"input_activations":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"INT8", R"({"targets":["Linear"],"weights":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"channel","dynamic":false},"input_activations":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W4AFP8", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":8,"type":"float","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"FP8", R"({"targets":["Linear"],"weights":{"num_bits":8,"type":"float","symmetric":true,"group_size":null,"strategy":"tensor","dynamic":false},"input_activations":{"num_bits":8,"type":"float","symmetric":true,"group_size":null,"strategy":"tensor","dynamic":false,"observer":"static_minmax"},"output_activations":null,"format":null})"},
      {"FP8_DYNAMIC", R"({"targets":["Linear"],"weights":{"num_bits":8,"type":"float","symmetric":true,"group_size":null,"strategy":"channel","dynamic":false},"input_activations":{"num_bits":8,"type":"float","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"FP8_BLOCK", R"({"targets":["Linear"],"weights":{"num_bits":8,"type":"float","symmetric":true,"group_size":null,"strategy":"block","block_structure":[128,128],"dynamic":false},"input_activations":{"num_bits":8,"type":"float","symmetric":true,"group_size":128,"strategy":"group","dynamic":true},"output_activations":null,"format":null})"},
      {"NVFP4A16", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"float","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":false,"scale_dtype":"torch.float8_e4m3fn"},"input_activations":null,"output_activations":null,"format":null})"},
      {"NVFP4", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"float","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":false,"scale_dtype":"torch.float8_e4m3fn"},"input_activations":{"num_bits":4,"type":"float","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":"local","scale_dtype":"torch.float8_e4m3fn","observer":"static_minmax"},"output_activations":null,"format":null})"},
      {"MXFP4A16", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"torch.uint8"},"input_activations":null,"output_activations":null,"format":null})"},
      {"MXFP4", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"torch.uint8"},"input_activations":{"num_bits":4,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":true,"scale_dtype":"torch.uint8"},"output_activations":null,"format":null})"},
      {"MXFP4XFP8", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"torch.uint8"},"input_activations":{"num_bits":8,"type":"float","symmetric":true,"group_size":128,"strategy":"group","dynamic":true},"output_activations":null,"format":null})"},
      {"MXFP6A16", R"({"targets":["Linear"],"weights":{"num_bits":6,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"torch.uint8"},"input_activations":null,"output_activations":null,"format":null})"},
      {"MXFP6A8", R"({"targets":["Linear"],"weights":{"num_bits":6,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"torch.uint8"},"input_activations":{"num_bits":8,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":true,"scale_dtype":"torch.uint8"},"output_activations":null,"format":null})"},
      {"MXFP8A16", R"({"targets":["Linear"],"weights":{"num_bits":8,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"torch.uint8"},"input_activations":null,"output_activations":null,"format":null})"},
      {"MXFP8", R"({"targets":["Linear"],"weights":{"num_bits":8,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":false,"scale_dtype":"torch.uint8"},"input_activations":{"num_bits":8,"type":"float","symmetric":true,"group_size":32,"strategy":"group","dynamic":true,"scale_dtype":"torch.uint8"},"output_activations":null,"format":null})"},
      {"W2A4", R"({"targets":["Linear"],"weights":{"num_bits":2,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":4,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W2A8", R"({"targets":["Linear"],"weights":{"num_bits":2,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W2A16", R"({"targets":["Linear"],"weights":{"num_bits":2,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null})"},
      {"W3A4", R"({"targets":["Linear"],"weights":{"num_bits":3,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":4,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W3A8", R"({"targets":["Linear"],"weights":{"num_bits":3,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W3A16", R"({"targets":["Linear"],"weights":{"num_bits":3,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null})"},
      {"W4A4", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":4,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W4A8", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W4A16", R"({"targets":["Linear"],"weights":{"num_bits":4,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null})"},
      {"W5A8", R"({"targets":["Linear"],"weights":{"num_bits":5,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W5A16", R"({"targets":["Linear"],"weights":{"num_bits":5,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null})"},
      {"W6A8", R"({"targets":["Linear"],"weights":{"num_bits":6,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W6A16", R"({"targets":["Linear"],"weights":{"num_bits":6,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null})"},
      {"W7A8", R"({"targets":["Linear"],"weights":{"num_bits":7,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":{"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"token","dynamic":true},"output_activations":null,"format":null})"},
      {"W7A16", R"({"targets":["Linear"],"weights":{"num_bits":7,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null})"},
      {"W8A16", R"({"targets":["Linear"],"weights":{"num_bits":8,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null})"},
  };
  // clang-format on
  ASSERT_EQ(Config::PresetNames().size(), kGolden.size());
  for (const auto& [name, golden] : kGolden) {
    Config c = Parse(R"({"config_groups": {")" + name + R"(": ["Linear"]}})");
    ASSERT_TRUE(c.quantization.has_value()) << name;
    EXPECT_EQ(c.quantization->config_groups[0].second.ToJson().dump(), golden) << name;
  }
}

TEST(CompressedTensorsConfigTest, KvCacheSchemeAndMoeSparsityNormalize) {
  Config c = Parse(
      R"({"quant_method": "compressed-tensors", "config_groups": {"W4A16_ASYM": ["Linear"]},
          "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor",
                              "dynamic": false, "symmetric": true},
          "format": "pack-quantized",
          "moe_sparsity_config": {"method": "prune", "num_experts": [null, 4]}})");
  EXPECT_EQ(
      c.ToJson(),
      R"({"config_groups":{"W4A16_ASYM":{"targets":["Linear"],"weights":{"num_bits":4,"type":"int","symmetric":false,"group_size":128,"strategy":"group","dynamic":false},"input_activations":null,"output_activations":null,"format":null}},"quant_method":"compressed-tensors","kv_cache_scheme":{"num_bits":8,"type":"float","symmetric":true,"group_size":null,"strategy":"tensor","dynamic":false},"format":"pack-quantized","quantization_status":"initialized","global_compression_ratio":null,"ignore":null,"moe_sparsity_config":{"method":"prune","num_experts":[null,4]}})");
}

TEST(CompressedTensorsConfigTest, LaxPydanticCoercionsNormalize) {
  Config c = Parse(
      R"({"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"],
          "weights": {"num_bits": "8", "type": "INT", "symmetric": "no", "strategy": "Channel",
                      "zp_dtype": "int8", "scale_dtype": "torch.float16",
                      "observer_kwargs": {"a": 1}}}}})");
  EXPECT_EQ(
      c.ToJson(),
      R"({"config_groups":{"g":{"targets":["Linear"],"weights":{"num_bits":8,"type":"int","symmetric":false,"group_size":null,"strategy":"channel","dynamic":false,"scale_dtype":"torch.float16","zp_dtype":"torch.int8","observer_kwargs":{"a":1}},"input_activations":null,"output_activations":null,"format":null}},"quant_method":"compressed-tensors","kv_cache_scheme":null,"format":"dense","quantization_status":"initialized","global_compression_ratio":null,"ignore":null,"moe_sparsity_config":null})");
}

TEST(CompressedTensorsConfigTest, NestedQuantizationConfigReplacesTheDict) {
  Config c = Parse(
      R"({"quant_method": "compressed-tensors", "run_compressed": false,
          "quantization_config": {"config_groups": {"W8A16": ["Linear"]},
                                  "quantization_status": "frozen"}})");
  ASSERT_TRUE(c.quantization.has_value());
  EXPECT_EQ(c.quantization->quantization_status, "frozen");
  EXPECT_EQ(c.quantization->quant_method, "compressed-tensors");
  EXPECT_FALSE(c.dequantize);  // the outer run_compressed is dropped with the outer dict
  ExpectInvalid(R"({"quant_method": "compressed-tensors", "quantization_config": "W4A16"})",
                "quantization_config.quantization_config must be an object (the nested "
                "compressed-tensors config) (got \"W4A16\")");
  ExpectInvalid(
      R"({"quantization_config": {"quant_method": 1, "config_groups": {"W8A16": ["Linear"]}}})",
      "quantization_config.quant_method must be \"compressed-tensors\" (got 1)");
}

TEST(CompressedTensorsConfigTest, KvCacheSchemeAloneStillNeedsConfigGroups) {
  ExpectInvalid(R"({"kv_cache_scheme": {"num_bits": 8, "type": "float"}})",
                "quantization_config.config_groups is required (an object mapping group names "
                "to schemes)");
  ExpectInvalid(R"({"kv_cache_scheme": {"num_bits": 8}, "config_groups": null})",
                "quantization_config.config_groups must be an object mapping group names to "
                "schemes (got null)");
  ExpectInvalid(R"({"config_groups": [1]})",
                "quantization_config.config_groups must be an object mapping group names to "
                "schemes (got [1])");
  // A non-empty config_groups with an empty kv_cache_scheme validates it as default args.
  Config c = Parse(R"({"config_groups": {"W8A16": ["Linear"]}, "kv_cache_scheme": {}})");
  ASSERT_TRUE(c.quantization->kv_cache_scheme.has_value());
  EXPECT_EQ(c.quantization->kv_cache_scheme->num_bits, 8);
}

TEST(CompressedTensorsConfigTest, GroupIsASchemeOrAPresetList) {
  std::string presets;
  for (const auto& p : Config::PresetNames())
    presets += (presets.empty() ? "\"" : ", \"") + p + "\"";
  ExpectInvalid(R"({"config_groups": {"foo": ["Linear"]}})",
                "quantization_config.config_groups.foo is a list of targets, so the group must be "
                "named after a preset scheme; \"FOO\" is not one of " +
                    presets);
  ExpectInvalid(R"({"config_groups": {"g": null}})",
                "quantization_config.config_groups.g must be a QuantizationScheme object, or a "
                "list of targets in a group named after a preset scheme (got null)");
  ExpectInvalid(R"({"config_groups": {"W4A16": ["Linear", 1]}})",
                "quantization_config.config_groups.W4A16 must be a list of targets (strings) for "
                "a preset-named group (got [\"Linear\",1])");
}

TEST(CompressedTensorsConfigTest, QuantizationStatusIsALifecycleState) {
  for (const char* s : {"initialized", "calibration", "frozen", "compressed", "decompressed"}) {
    EXPECT_EQ(
        Parse(std::string(R"({"config_groups": {"W8A16": ["Linear"]}, "quantization_status": ")") +
              s + "\"}")
            .quantization->quantization_status,
        s);
  }
  const std::string what =
      "quantization_config.quantization_status must be one of \"initialized\", \"calibration\", "
      "\"frozen\", \"compressed\", \"decompressed\"";
  ExpectInvalid(R"({"config_groups": {"W8A16": ["Linear"]}, "quantization_status": "COMPRESSED"})",
                what + " (got \"COMPRESSED\")");
  ExpectInvalid(R"({"config_groups": {"W8A16": ["Linear"]}, "quantization_status": null})",
                what + " (got null)");
}

TEST(CompressedTensorsConfigTest, FormatIsAnyString) {
  EXPECT_EQ(Parse(R"({"config_groups": {"W8A16": ["Linear"]}, "format": "anything"})")
                .quantization->format,
            "anything");
  ExpectInvalid(R"({"config_groups": {"W8A16": ["Linear"]}, "format": 5})",
                "quantization_config.format must be a string (e.g. \"pack-quantized\") (got 5)");
  ExpectInvalid(R"({"config_groups": {"W8A16": ["Linear"]}, "format": null})",
                "quantization_config.format must be a string (e.g. \"pack-quantized\") (got null)");
}

TEST(CompressedTensorsConfigTest, IgnoreIsAListOfNamesOrPatterns) {
  Config c =
      Parse(R"({"config_groups": {"W8A16": ["Linear"]}, "ignore": ["lm_head", "re:.*gate"]})");
  EXPECT_EQ(c.quantization->ignore->at(1), "re:.*gate");
  EXPECT_FALSE(Parse(R"({"config_groups": {"W8A16": ["Linear"]}, "ignore": null})")
                   .quantization->ignore.has_value());
  ExpectInvalid(R"({"config_groups": {"W8A16": ["Linear"]}, "ignore": "lm_head"})",
                "quantization_config.ignore must be a list of module names, class names or \"re:\" "
                "patterns, or null (got \"lm_head\")");
}

TEST(CompressedTensorsConfigTest, GlobalCompressionRatioIsANumber) {
  EXPECT_DOUBLE_EQ(
      *Parse(R"({"config_groups": {"W8A16": ["Linear"]}, "global_compression_ratio": "1.5"})")
           .quantization->global_compression_ratio,
      1.5);
  ExpectInvalid(R"({"config_groups": {"W8A16": ["Linear"]}, "global_compression_ratio": "high"})",
                "quantization_config.global_compression_ratio must be a finite number or null "
                "(got \"high\")");
}

TEST(CompressedTensorsConfigTest, MoeSparsityConfigIsValidated) {
  const std::string base = R"({"config_groups": {"W8A16": ["Linear"]}, "moe_sparsity_config": )";
  ExpectInvalid(base + R"({"method": "reap", "num_experts": [1]}})",
                "quantization_config.moe_sparsity_config.method must be one of \"prune\", "
                "\"novice\" (got \"reap\")");
  ExpectInvalid(base + R"({"method": "prune", "num_experts": [3.0]}})",
                "quantization_config.moe_sparsity_config.num_experts must be a list of per-layer "
                "expert counts (integers, or null for dense) (got [3.0])");
  ExpectInvalid(base + R"({"method": "novice"}})",
                "quantization_config.moe_sparsity_config.num_experts is required (a list of "
                "per-layer expert counts (integers, or null for dense))");
  ExpectInvalid(base + R"("prune"})",
                "quantization_config.moe_sparsity_config must be an object {\"method\", "
                "\"num_experts\"} or null (got \"prune\")");
}

TEST(CompressedTensorsConfigTest, RunCompressedFalseMeansDequantize) {
  EXPECT_FALSE(Parse(R"({"config_groups": {"W8A16": ["Linear"]}})").dequantize);
  EXPECT_TRUE(
      Parse(R"({"config_groups": {"W8A16": ["Linear"]}, "run_compressed": false})").dequantize);
  EXPECT_FALSE(
      Parse(R"({"config_groups": {"W8A16": ["Linear"]}, "run_compressed": true})").dequantize);
  // An explicit dequantize=True wins over run_compressed.
  EXPECT_TRUE(
      Parse(
          R"({"config_groups": {"W8A16": ["Linear"]}, "run_compressed": true, "dequantize": true})")
          .dequantize);
  EXPECT_FALSE(Parse(R"({"run_compressed": null})").dequantize);
  ExpectInvalid(R"({"run_compressed": "no"})",
                "quantization_config.run_compressed must be true, false or null (got \"no\")");
  ExpectInvalid(R"({"dequantize": null})",
                "quantization_config.dequantize must be true or false (got null)");
  ExpectInvalid(R"({"use_optimized_inference": 1})",
                "quantization_config.use_optimized_inference must be true or false (got 1)");
}

TEST(CompressedTensorsConfigTest, OptimizedInferenceNeedsAnFp8GroupAndNoDequantize) {
  EXPECT_TRUE(
      Parse(R"({"config_groups": {"FP8_DYNAMIC": ["Linear"]}, "use_optimized_inference": true})")
          .use_optimized_inference);
  EXPECT_FALSE(Parse(R"({"config_groups": {"W4A16": ["Linear"]}, "use_optimized_inference": true})")
                   .use_optimized_inference);
  EXPECT_FALSE(
      Parse(
          R"({"config_groups": {"FP8": ["Linear"]}, "use_optimized_inference": true, "dequantize": true})")
          .use_optimized_inference);
}

// ---- QuantizationScheme ----

TEST(CompressedTensorsConfigTest, SchemeNeedsTargetsAsAList) {
  ExpectInvalid(R"({"config_groups": {"g": {"weights": {"num_bits": 4}}}})",
                "quantization_config.config_groups.g.targets is required (a list of module names, "
                "class names or \"re:\" patterns)");
  ExpectInvalid(R"({"config_groups": {"g": {"targets": "Linear"}}})",
                "quantization_config.config_groups.g.targets must be a list of module names, class "
                "names or \"re:\" patterns (got \"Linear\")");
}

TEST(CompressedTensorsConfigTest, SchemeForbidsUnknownFields) {
  ExpectInvalid(R"({"config_groups": {"g": {"targets": ["Linear"], "bits": 4}}})",
                "quantization_config.config_groups.g has unknown field \"bits\" "
                "(QuantizationScheme forbids extra fields; allowed: \"targets\", \"weights\", "
                "\"input_activations\", \"output_activations\", \"format\")");
}

TEST(CompressedTensorsConfigTest, SchemeFormatIsACompressionFormat) {
  EXPECT_EQ(
      *Parse(
           R"({"config_groups": {"g": {"targets": ["Linear"], "format": "nvfp4-pack-quantized"}}})")
           .quantization->config_groups[0]
           .second.format,
      "nvfp4-pack-quantized");
  const std::string what =
      "quantization_config.config_groups.g.format must be one of \"dense\", \"sparse-bitmask\", "
      "\"sparse-24-bitmask\", \"int-quantized\", \"float-quantized\", \"naive-quantized\", "
      "\"pack-quantized\", \"marlin-24\", \"mixed-precision\", \"nvfp4-pack-quantized\", "
      "\"mxfp4-pack-quantized\", \"mxfp6-pack-quantized\", \"mxfp8-quantized\" or null";
  ExpectInvalid(R"({"config_groups": {"g": {"targets": ["Linear"], "format": "Dense"}}})",
                what + " (got \"Dense\")");
  ExpectInvalid(R"({"config_groups": {"g": {"targets": ["Linear"], "format": "mixed-precision"}}})",
                "quantization_config.config_groups.g.format must be a per-scheme format other than "
                "\"mixed-precision\" (a global format only) (got \"mixed-precision\")");
}

TEST(CompressedTensorsConfigTest, ActivationStrategiesAreLimited) {
  ExpectInvalid(
      R"({"config_groups": {"g": {"targets": ["Linear"], "input_activations": {"strategy": "channel"}}}})",
      "quantization_config.config_groups.g.input_activations.strategy must be one of "
      "\"token\", \"tensor\", \"group\", \"tensor_group\", \"attn_head\" for activations "
      "(got \"channel\")");
  // Output activations have no strategy restriction.
  EXPECT_EQ(
      Parse(
          R"({"config_groups": {"g": {"targets": ["Linear"], "output_activations": {"strategy": "channel"}}}})")
          .quantization->config_groups[0]
          .second.output_activations->strategy,
      "channel");
}

TEST(CompressedTensorsConfigTest, ActorderIsForWeightsOnly) {
  ExpectInvalid(
      R"({"config_groups": {"g": {"targets": ["Linear"], "input_activations": {"actorder": "weight"}}}})",
      "quantization_config.config_groups.g.input_activations.actorder must be null "
      "(actorder applies to weights only) (got \"weight\")");
  ExpectInvalid(
      R"({"config_groups": {"g": {"targets": ["Linear"], "output_activations": {"actorder": "static"}}}})",
      "quantization_config.config_groups.g.output_activations.actorder must be null "
      "(actorder applies to weights only) (got \"static\")");
}

// ---- QuantizationArgs ----

TEST(CompressedTensorsConfigTest, ArgsDefaults) {
  EXPECT_EQ(
      WeightsJson("{}"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"tensor","dynamic":false})");
}

TEST(CompressedTensorsConfigTest, ArgsForbidUnknownFields) {
  ExpectInvalid(Weights(R"({"bits": 4})"),
                "quantization_config.config_groups.g.weights has unknown field \"bits\" "
                "(QuantizationArgs forbids extra fields; allowed: \"num_bits\", \"type\", "
                "\"symmetric\", \"group_size\", \"strategy\", \"block_structure\", \"dynamic\", "
                "\"actorder\", \"scale_dtype\", \"zp_dtype\", \"observer\", \"observer_kwargs\")");
  ExpectInvalid(Weights("[4]"),
                "quantization_config.config_groups.g.weights must be an object of quantization "
                "args (num_bits, type, strategy, ...) or null (got [4])");
}

TEST(CompressedTensorsConfigTest, NumBitsIsALaxInteger) {
  for (const char* v : {"4", "4.0", "\"4\"", "\" 4 \"", "\"4.00\""}) {
    EXPECT_EQ(Parse(Weights(std::string(R"({"num_bits": )") + v + "}"))
                  .quantization->config_groups[0]
                  .second.weights->num_bits,
              4)
        << v;
  }
  EXPECT_EQ(Parse(Weights(R"({"num_bits": true})"))
                .quantization->config_groups[0]
                .second.weights->num_bits,
            1);
  ExpectInvalid(Weights(R"({"num_bits": 4.5})"), kW + "num_bits must be an integer (got 4.5)");
  ExpectInvalid(Weights(R"({"num_bits": "4e2"})"),
                kW + "num_bits must be an integer (got \"4e2\")");
  ExpectInvalid(Weights(R"({"num_bits": null})"), kW + "num_bits must be an integer (got null)");
}

TEST(CompressedTensorsConfigTest, TypeIsIntOrFloat) {
  EXPECT_EQ(
      Parse(Weights(R"({"type": "FLOAT"})")).quantization->config_groups[0].second.weights->type,
      "float");
  ExpectInvalid(Weights(R"({"type": "fp"})"),
                kW + "type must be one of \"int\", \"float\" (got \"fp\")");
  ExpectInvalid(Weights(R"({"type": null})"),
                kW + "type must be one of \"int\", \"float\" (got null)");
}

TEST(CompressedTensorsConfigTest, FloatNeedsFourSixOrEightBits) {
  for (const char* bits : {"4", "6", "8"}) {
    EXPECT_TRUE(
        Config::Parse(Weights(std::string(R"({"type": "float", "num_bits": )") + bits + "}")).ok());
  }
  ExpectInvalid(
      Weights(R"({"type": "float", "num_bits": 16})"),
      kW + "num_bits must be 4, 6 or 8 for type \"float\" (unless zp_dtype is given) (got 16)");
  EXPECT_TRUE(
      Config::Parse(Weights(R"({"type": "float", "num_bits": 16, "zp_dtype": "float8_e4m3fn"})"))
          .ok());
  // Integers take any bit width.
  EXPECT_TRUE(Config::Parse(Weights(R"({"num_bits": 3})")).ok());
}

TEST(CompressedTensorsConfigTest, SymmetricIsALaxBool) {
  EXPECT_FALSE(Parse(Weights(R"({"symmetric": "off"})"))
                   .quantization->config_groups[0]
                   .second.weights->symmetric);
  EXPECT_TRUE(Parse(Weights(R"({"symmetric": 1})"))
                  .quantization->config_groups[0]
                  .second.weights->symmetric);
  ExpectInvalid(Weights(R"({"symmetric": 2})"), kW + "symmetric must be true or false (got 2)");
  ExpectInvalid(Weights(R"({"symmetric": null})"),
                kW + "symmetric must be true or false (got null)");
}

TEST(CompressedTensorsConfigTest, GroupSizeInfersTheStrategy) {
  EXPECT_EQ(
      WeightsJson(R"({"group_size": 128})"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false})");
  EXPECT_EQ(
      WeightsJson(R"({"group_size": -1})"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":-1,"strategy":"channel","dynamic":false})");
  EXPECT_EQ(
      WeightsJson(R"({"group_size": 64.0, "strategy": "group"})"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":64,"strategy":"group","dynamic":false})");
  const std::string what = "group_size must be an integer: -1 (channel), > 0 (group) or null";
  ExpectInvalid(Weights(R"({"group_size": -2})"), kW + what + " (got -2)");
  ExpectInvalid(Weights(R"({"group_size": "64"})"), kW + what + " (got \"64\")");
  ExpectInvalid(Weights(R"({"group_size": 64.5})"), kW + what + " (got 64.5)");
  ExpectInvalid(Weights(R"({"group_size": 0})"),
                kW + "group_size must be -1 (channel), > 0 (group) or null (tensor) (got 0)");
}

TEST(CompressedTensorsConfigTest, StrategyIsAKnownStrategy) {
  EXPECT_EQ(Parse(Weights(R"({"strategy": "ATTN_HEAD"})"))
                .quantization->config_groups[0]
                .second.weights->strategy,
            "attn_head");
  const std::string what =
      "strategy must be one of \"tensor\", \"channel\", \"group\", \"block\", \"token\", "
      "\"tensor_group\", \"attn_head\" or null";
  ExpectInvalid(Weights(R"({"strategy": "row"})"), kW + what + " (got \"row\")");
  ExpectInvalid(Weights(R"({"strategy": 5})"), kW + what + " (got 5)");
}

TEST(CompressedTensorsConfigTest, TokenStrategyNeedsDynamic) {
  ExpectInvalid(Weights(R"({"strategy": "token"})"),
                kW + "dynamic must be true for strategy \"token\" (static token quantization is "
                     "not supported) (got false)");
  EXPECT_TRUE(Config::Parse(Weights(R"({"strategy": "token", "dynamic": true})")).ok());
}

TEST(CompressedTensorsConfigTest, GroupStrategiesNeedAPositiveGroupSize) {
  ExpectInvalid(Weights(R"({"strategy": "group"})"),
                kW + "group_size must be > 0 for strategy \"group\" (got null)");
  ExpectInvalid(Weights(R"({"strategy": "tensor_group", "group_size": -1})"),
                kW + "group_size must be > 0 for strategy \"tensor_group\" (got -1)");
  ExpectInvalid(Weights(R"({"strategy": "channel", "group_size": 64})"),
                kW + "group_size must be -1 or null with strategy \"channel\" (a positive "
                     "group_size needs strategy \"group\" or \"tensor_group\") (got 64)");
}

TEST(CompressedTensorsConfigTest, BlockStrategyNeedsBlockStructureAndBack) {
  EXPECT_EQ(
      WeightsJson(R"({"strategy": "block", "block_structure": "128x64"})"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"block","block_structure":[128,64],"dynamic":false})");
  EXPECT_TRUE(
      Config::Parse(Weights(R"({"strategy": "block", "block_structure": [128, 128]})")).ok());
  ExpectInvalid(Weights(R"({"strategy": "block"})"),
                kW + "block_structure must be [rows, cols] for strategy \"block\" (got null)");
  ExpectInvalid(Weights(R"({"block_structure": [128, 128]})"),
                kW + "strategy must be \"block\" when block_structure is given (got \"tensor\")");
  const std::string what =
      "block_structure must be a list of two positive integers [rows, cols] (or the legacy "
      "string \"RxC\")";
  ExpectInvalid(Weights(R"({"strategy": "block", "block_structure": [128, 0]})"),
                kW + what + " (got [128,0])");
  ExpectInvalid(Weights(R"({"strategy": "block", "block_structure": [128.0, 128]})"),
                kW + what + " (got [128.0,128])");
  ExpectInvalid(Weights(R"({"strategy": "block", "block_structure": [1, 2, 3]})"),
                kW + what + " (got [1,2,3])");
  ExpectInvalid(Weights(R"({"strategy": "block", "block_structure": "2x4x1"})"),
                kW + what + " (got \"2x4x1\")");
}

TEST(CompressedTensorsConfigTest, DynamicIsBoolOrLocalWithMatchingStrategies) {
  EXPECT_EQ(
      Parse(Weights(R"({"dynamic": 1})")).quantization->config_groups[0].second.weights->dynamic,
      true);
  EXPECT_EQ(
      WeightsJson(R"({"dynamic": "LOCAL", "strategy": "tensor_group", "group_size": 16})"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":16,"strategy":"tensor_group","dynamic":"local"})");
  ExpectInvalid(Weights(R"({"dynamic": "yes"})"),
                kW + "dynamic must be true, false or \"local\" (got \"yes\")");
  ExpectInvalid(Weights(R"({"dynamic": null})"),
                kW + "dynamic must be true, false or \"local\" (got null)");
  ExpectInvalid(Weights(R"({"dynamic": true, "strategy": "channel"})"),
                kW + "strategy must be one of \"token\", \"tensor\", \"tensor_group\", \"group\" "
                     "for dynamic quantization (got \"channel\")");
  ExpectInvalid(Weights(R"({"dynamic": "local", "group_size": 16})"),
                kW + "strategy must be \"tensor_group\" for dynamic \"local\" (got \"group\")");
}

TEST(CompressedTensorsConfigTest, ActorderRemovedValuesAreRefused) {
  EXPECT_EQ(
      WeightsJson(R"({"actorder": "static", "group_size": 128})"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":128,"strategy":"group","dynamic":false,"actorder":"static"})");
  // False means no ordering and is dropped from the dump; any strategy may carry "weight".
  EXPECT_EQ(WeightsJson(R"({"actorder": false})"), WeightsJson("{}"));
  EXPECT_TRUE(Config::Parse(Weights(R"({"actorder": "weight", "strategy": "channel"})")).ok());
  const std::string what = "actorder must be \"weight\", \"static\", false or null";
  ExpectInvalid(Weights(R"({"actorder": true})"),
                kW + what + " (true meant the removed \"group\" ordering) (got true)");
  ExpectInvalid(Weights(R"({"actorder": "Group"})"),
                kW + what + " (\"group\" and \"dynamic\" were removed) (got \"Group\")");
  ExpectInvalid(Weights(R"({"actorder": "dynamic"})"),
                kW + what + " (\"group\" and \"dynamic\" were removed) (got \"dynamic\")");
  ExpectInvalid(Weights(R"({"actorder": "WEIGHT"})"), kW + what + " (got \"WEIGHT\")");
}

TEST(CompressedTensorsConfigTest, DtypesAreTorchDtypeNames) {
  EXPECT_EQ(
      WeightsJson(R"({"scale_dtype": "half"})"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"tensor","dynamic":false,"scale_dtype":"torch.float16"})");
  // zp_dtype is only serialized for asymmetric args.
  EXPECT_EQ(WeightsJson(R"({"zp_dtype": "torch.int8"})"), WeightsJson("{}"));
  const std::string what = "must be a torch dtype name (e.g. \"float8_e4m3fn\" or \"torch.int8\")";
  ExpectInvalid(Weights(R"({"scale_dtype": "fp8"})"),
                kW + "scale_dtype " + what + " (got \"fp8\")");
  ExpectInvalid(Weights(R"({"zp_dtype": 8})"), kW + "zp_dtype " + what + " (got 8)");
}

TEST(CompressedTensorsConfigTest, ObserverFields) {
  EXPECT_EQ(
      WeightsJson(R"({"observer": "mse", "observer_kwargs": {"maxshrink": 0.2}})"),
      R"({"num_bits":8,"type":"int","symmetric":true,"group_size":null,"strategy":"tensor","dynamic":false,"observer":"mse","observer_kwargs":{"maxshrink":0.2}})");
  EXPECT_EQ(WeightsJson(R"({"observer": null, "observer_kwargs": {}})"), WeightsJson("{}"));
  ExpectInvalid(Weights(R"({"observer": 5})"), kW + "observer must be a string or null (got 5)");
  ExpectInvalid(Weights(R"({"observer_kwargs": null})"),
                kW + "observer_kwargs must be an object (got null)");
}

}  // namespace
}  // namespace quantserve::quant

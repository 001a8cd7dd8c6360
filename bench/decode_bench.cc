// qs_decode_bench: batch-1 prefill and decode speed of each quantization preset on one model,
// as ratios to our own bf16 and fp32 paths measured in the same run, plus the fraction of the
// machine's read bandwidth the decode reaches (bench/README.md explains every column).
//
// For each preset in --methods: load the model through engine::LoadServableModel (quantizing
// while the weights stream in), run one short warm-up generation, then --repeats greedy
// generations of --decode_tokens tokens (ignore_eos) after a prompt of --prompt_tokens random
// token ids. Prefill tok/s = prompt_tokens / time to first token; decode tok/s = tokens after
// the first / time from the first to the last; both are the median over the repeats. The model
// is shut down and freed before the next preset loads, so peak memory is one model's.
//
// Read bandwidth is a STREAM-like sum over a --stream_mib buffer on --threads threads, measured
// before the first and after the last preset; the larger figure is the denominator.

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/bench_common.h"
#include "engine/engine_api.h"
#include "nlohmann/json.hpp"

#ifndef QS_BENCH_PRESETS_FILE
#define QS_BENCH_PRESETS_FILE "bench/presets.json"
#endif

ABSL_FLAG(std::string, model, "", "Required. Model directory (bench/make_bench_model.py).");
ABSL_FLAG(std::string, methods,
          "fp32,bf16,bnb_int8,torchao_int8,quanto_int8,bnb_nf4,torchao_int4,hqq4,quanto_int4",
          "Comma-separated preset names from --presets_file, run in this order.");
ABSL_FLAG(std::string, presets_file, QS_BENCH_PRESETS_FILE, "Preset table (JSON).");
ABSL_FLAG(int, threads, 0, "Intra-op threads for the model and the bandwidth probe; 0 = all cores.");
ABSL_FLAG(int, prompt_tokens, 128, "Prompt length in tokens (random ids).");
ABSL_FLAG(int, decode_tokens, 64, "Tokens generated per run (greedy, ignore_eos).");
ABSL_FLAG(int, repeats, 3, "Measured runs per preset (medians are reported).");
ABSL_FLAG(int, warmup_tokens, 8, "Tokens of the unmeasured warm-up run per preset; 0 = none.");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the prompt's token ids.");
ABSL_FLAG(int, stream_mib, 1024, "Bandwidth probe buffer in MiB (much larger than the caches).");
ABSL_FLAG(int, stream_passes, 5, "Bandwidth probe passes (best is kept).");
ABSL_FLAG(std::string, json, "", "Also write the results as JSON to this file.");

namespace {

namespace bench = quantserve::bench;
namespace engine = quantserve::engine;
using nlohmann::json;

// "aten_linear=1, int8_gemv_avx2=154": which kernel the linear layers run, and how many.
std::string KernelsOf(const engine::ModelDescription& d) {
  std::vector<std::string> parts;
  for (const auto& [kernel, layers] : d.kernels) parts.push_back(absl::StrCat(kernel, "=", layers));
  return absl::StrJoin(parts, ", ");
}

// The shape facts the bytes-per-token definition needs, from the model's config.json.
struct ModelShape {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t q_size = 0;   // num_attention_heads * head_dim
  int64_t kv_size = 0;  // num_key_value_heads * head_dim
  bool tie_word_embeddings = false;

  // Weights of the decoder layers' seven projections (what quantization replaces).
  int64_t LinearParameters() const {
    const int64_t h = hidden_size;
    return num_hidden_layers * (2 * h * q_size + 2 * h * kv_size + 3 * h * intermediate_size);
  }
};

absl::StatusOr<ModelShape> ReadShape(const std::string& dir) {
  std::ifstream in(dir + "/config.json");
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", dir, "/config.json"));
  const json c = json::parse(in, nullptr, /*allow_exceptions=*/false);
  for (const char* key : {"hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    if (c.is_discarded() || !c.contains(key) || !c[key].is_number_integer() ||
        c[key].get<int64_t>() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/config.json: needs a positive integer ", key));
    }
  }
  const int64_t heads = c["num_attention_heads"].get<int64_t>();
  const int64_t kv_heads = c.value("num_key_value_heads", heads);
  const int64_t head_dim = c.value("head_dim", c["hidden_size"].get<int64_t>() / heads);
  return ModelShape{.hidden_size = c["hidden_size"].get<int64_t>(),
                    .intermediate_size = c["intermediate_size"].get<int64_t>(),
                    .vocab_size = c["vocab_size"].get<int64_t>(),
                    .num_hidden_layers = c["num_hidden_layers"].get<int64_t>(),
                    .q_size = heads * head_dim,
                    .kv_size = kv_heads * head_dim,
                    .tie_word_embeddings = c.value("tie_word_embeddings", false)};
}

int64_t DtypeBytes(const std::string& dtype) { return dtype == "float32" ? 4 : 2; }

struct PresetResult {
  bench::Preset preset;
  std::string error;  // non-empty: the preset failed (load or generation)
  engine::ModelDescription description;
  int64_t rss_after_load_bytes = 0;
  int64_t bytes_per_token = 0;            // nominal (see BytesPerToken)
  int64_t footprint_bytes_per_token = 0;  // from the footprint (see FootprintBytesPerToken)
  std::vector<double> prefill_tps;
  std::vector<double> decode_tps;
  double prefill = 0;  // medians
  double decode = 0;
  std::string kernels;
};

// Weight bytes one decode step must read, nominally: the decoder projections at the preset's
// bits_per_weight (scales and zeros included), lm_head in the model dtype (no preset quantizes
// it), one embedding row and the norms. Falls back to the footprint when the preset does not
// say its bits per weight.
int64_t BytesPerToken(const engine::ModelDescription& d, const ModelShape& shape,
                      double bits_per_weight) {
  if (bits_per_weight <= 0) return -1;
  const int64_t db = DtypeBytes(d.dtype);
  const int64_t row = shape.hidden_size * db;
  const int64_t norms = (2 * shape.num_hidden_layers + 1) * row;
  const int64_t lm_head = shape.vocab_size * row;  // tied: the same table, read once
  return static_cast<int64_t>(static_cast<double>(shape.LinearParameters()) * bits_per_weight /
                              8) +
         lm_head + norms + (shape.tie_word_embeddings ? 0 : row);
}

// The same from what the model holds: the footprint less the embedding table plus one row.
// Over-counts when a method keeps a repacked copy of its codes for the kernel besides the
// serialized ones (both are in the footprint, one is read).
int64_t FootprintBytesPerToken(const engine::ModelDescription& d, const ModelShape& shape) {
  const int64_t row = shape.hidden_size * DtypeBytes(d.dtype);
  if (shape.tie_word_embeddings) return d.memory_footprint_bytes;  // the table is lm_head
  return d.memory_footprint_bytes - shape.vocab_size * row + row;
}

PresetResult RunPreset(const bench::Preset& preset, const std::string& model_dir,
                       const ModelShape& shape, int threads) {
  PresetResult r{.preset = preset};
  engine::LoadOptions load;
  load.name = "bench-" + preset.name;
  load.path = model_dir;
  load.dtype = preset.dtype;
  load.quantization_config_json = preset.quantization_config_json;
  load.num_threads = threads;
  load.activation_bits = preset.activation_bits;
  std::string last_phase;
  std::cerr << "[" << preset.name << "] loading" << std::flush;
  absl::StatusOr<std::unique_ptr<engine::ServableModel>> loaded =
      engine::LoadServableModel(load, [&](const engine::LoadProgress& p) {
        if (p.phase != last_phase) {
          std::cerr << " " << p.phase << std::flush;
          last_phase = p.phase;
        }
      });
  std::cerr << "\n";
  if (!loaded.ok()) {
    r.error = absl::StrCat("load: ", loaded.status().ToString());
    return r;
  }
  std::unique_ptr<engine::ServableModel> model = std::move(*loaded);
  r.description = model->description();
  r.rss_after_load_bytes = bench::CurrentRssBytes();
  r.footprint_bytes_per_token = FootprintBytesPerToken(r.description, shape);
  r.bytes_per_token = BytesPerToken(r.description, shape, preset.bits_per_weight);
  if (r.bytes_per_token < 0) r.bytes_per_token = r.footprint_bytes_per_token;
  r.kernels = KernelsOf(r.description);

  const int prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const int decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  const std::vector<int32_t> prompt =
      bench::RandomTokenIds(prompt_tokens, shape.vocab_size, absl::GetFlag(FLAGS_seed));
  auto params = [&](int new_tokens) {
    engine::GenerateParams p;
    p.input_ids = prompt;
    p.max_new_tokens = new_tokens;
    p.ignore_eos = true;  // greedy by default (temperature 0)
    return p;
  };
  if (const int warm = absl::GetFlag(FLAGS_warmup_tokens); warm > 0) {
    if (auto w = bench::RunGeneration(*model, params(warm)); !w.ok()) {
      r.error = absl::StrCat("warm-up: ", w.status().ToString());
    }
  }
  for (int i = 0; r.error.empty() && i < absl::GetFlag(FLAGS_repeats); ++i) {
    absl::StatusOr<bench::TimedGeneration> g = bench::RunGeneration(*model, params(decode_tokens));
    if (!g.ok()) {
      r.error = absl::StrCat("generate: ", g.status().ToString());
    } else if (static_cast<int>(g->token_times_s.size()) != decode_tokens) {
      r.error = absl::StrCat("generated ", g->token_times_s.size(), " tokens, wanted ",
                             decode_tokens);
    } else {
      r.prefill_tps.push_back(prompt_tokens / g->time_to_first_token_s);
      r.decode_tps.push_back(g->DecodeTokensPerSecond());
      std::cerr << "[" << preset.name << "] run " << i + 1 << ": prefill "
                << bench::Fixed(r.prefill_tps.back(), 1) << " tok/s, decode "
                << bench::Fixed(r.decode_tps.back(), 2) << " tok/s\n";
    }
  }
  r.prefill = bench::Median(r.prefill_tps);
  r.decode = bench::Median(r.decode_tps);
  model->Shutdown();
  model.reset();  // free before the next preset loads
  return r;
}

std::string Ratio(double value, const PresetResult* base, double PresetResult::*field) {
  if (base == nullptr || !base->error.empty() || base->*field <= 0 || value <= 0) return "-";
  return bench::Fixed(value / (base->*field), 2) + "x";
}

std::string MiB(int64_t bytes) { return bench::Fixed(static_cast<double>(bytes) / (1 << 20), 0); }

int Main() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) {
    std::cerr << "qs_decode_bench: --model is required\n";
    return 2;
  }
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  absl::StatusOr<std::vector<bench::Preset>> all =
      bench::ReadPresets(absl::GetFlag(FLAGS_presets_file));
  absl::StatusOr<std::vector<bench::Preset>> presets =
      all.ok() ? bench::SelectPresets(*all, absl::GetFlag(FLAGS_methods)) : all.status();
  absl::StatusOr<ModelShape> shape = ReadShape(model_dir);
  for (const absl::Status& s : {presets.status(), shape.status()}) {
    if (!s.ok()) {
      std::cerr << "qs_decode_bench: " << s << "\n";
      return 2;
    }
  }

  const int64_t stream_bytes = int64_t{absl::GetFlag(FLAGS_stream_mib)} << 20;
  const int passes = absl::GetFlag(FLAGS_stream_passes);
  const bench::ReadBandwidth bw_start = bench::MeasureReadBandwidth(stream_bytes, threads, passes);
  std::cerr << "read bandwidth (start): " << bench::Fixed(bw_start.gb_per_s, 2) << " GB/s\n";
  std::vector<PresetResult> results;
  for (const bench::Preset& p : *presets) {
    results.push_back(RunPreset(p, model_dir, *shape, threads));
    if (!results.back().error.empty()) {
      std::cerr << "[" << p.name << "] FAILED: " << results.back().error << "\n";
    }
  }
  const bench::ReadBandwidth bw_end = bench::MeasureReadBandwidth(stream_bytes, threads, passes);
  const double bandwidth = std::max(bw_start.gb_per_s, bw_end.gb_per_s);

  const PresetResult* bf16 = nullptr;
  const PresetResult* fp32 = nullptr;
  for (const PresetResult& r : results) {
    if (r.preset.name == "bf16") bf16 = &r;
    if (r.preset.name == "fp32") fp32 = &r;
  }

  std::printf(
      "\n## qs_decode_bench: %s\n\nthreads %d, prompt %d tokens, decode %d tokens, %d repeats "
      "(median), batch 1, greedy\nread bandwidth (STREAM-like sum, %s MiB, %d threads, %s): "
      "%.2f GB/s at start, %.2f GB/s at end; fraction uses %.2f GB/s\n\n",
      model_dir.c_str(), threads, absl::GetFlag(FLAGS_prompt_tokens),
      absl::GetFlag(FLAGS_decode_tokens), absl::GetFlag(FLAGS_repeats),
      MiB(bw_start.bytes).c_str(), threads, bw_start.avx2 ? "AVX2" : "scalar", bw_start.gb_per_s,
      bw_end.gb_per_s, bandwidth);
  std::printf(
      "| preset | quant_method | dtype | footprint MiB | prefill tok/s | vs bf16 | vs fp32 | "
      "decode tok/s | vs bf16 | vs fp32 | MB read/token | %% read BW | kernels |\n"
      "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  json rows = json::array();
  bool failed = false;
  for (const PresetResult& r : results) {
    json row = {{"preset", r.preset.name},
                {"dtype", r.preset.dtype},
                {"quantization_config",
                 r.preset.quantization_config_json.empty()
                     ? json(nullptr)
                     : json::parse(r.preset.quantization_config_json)}};
    if (!r.error.empty()) {
      failed = true;
      row["error"] = r.error;
      std::printf("| %s | error: %s |||||||||||\n", r.preset.name.c_str(), r.error.c_str());
      rows.push_back(row);
      continue;
    }
    const double fraction = bandwidth > 0 ? r.bytes_per_token * r.decode / (bandwidth * 1e9) : 0;
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                r.preset.name.c_str(), r.description.quant_method.c_str(),
                r.description.dtype.c_str(), MiB(r.description.memory_footprint_bytes).c_str(),
                bench::Fixed(r.prefill, 1).c_str(),
                Ratio(r.prefill, bf16, &PresetResult::prefill).c_str(),
                Ratio(r.prefill, fp32, &PresetResult::prefill).c_str(),
                bench::Fixed(r.decode, 2).c_str(),
                Ratio(r.decode, bf16, &PresetResult::decode).c_str(),
                Ratio(r.decode, fp32, &PresetResult::decode).c_str(),
                bench::Fixed(r.bytes_per_token / 1e6, 1).c_str(),
                bench::Fixed(100 * fraction, 1).c_str(),
                r.kernels.empty() ? "-" : r.kernels.c_str());
    row.update({{"quant_method", r.description.quant_method},
                {"load_seconds", r.description.load_seconds},
                {"memory_footprint_bytes", r.description.memory_footprint_bytes},
                {"peak_load_memory_bytes", r.description.peak_load_memory_bytes},
                {"rss_after_load_bytes", r.rss_after_load_bytes},
                {"parameters", r.description.parameters},
                {"bits_per_weight", r.preset.bits_per_weight},
                {"bytes_per_token", r.bytes_per_token},
                {"footprint_bytes_per_token", r.footprint_bytes_per_token},
                {"prefill_tokens_per_s", r.prefill},
                {"prefill_runs", r.prefill_tps},
                {"decode_tokens_per_s", r.decode},
                {"decode_runs", r.decode_tps},
                {"read_bandwidth_fraction", fraction},
                {"kernels", r.kernels}});
    rows.push_back(row);
  }
  std::printf(
      "\nMB read/token = decoder projections x the preset's bits_per_weight (scales/zeros "
      "included) + lm_head + norms in the model dtype + one embedding row (KV cache not "
      "counted); %% read BW = MB read/token x decode tok/s / read bandwidth.\n");
  std::fflush(stdout);

  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    json doc = {
        {"benchmark", "qs_decode_bench"},
        {"model", model_dir},
        {"model_shape",
         {{"hidden_size", shape->hidden_size},
          {"vocab_size", shape->vocab_size},
          {"num_hidden_layers", shape->num_hidden_layers},
          {"tie_word_embeddings", shape->tie_word_embeddings}}},
        {"threads", threads},
        {"prompt_tokens", absl::GetFlag(FLAGS_prompt_tokens)},
        {"decode_tokens", absl::GetFlag(FLAGS_decode_tokens)},
        {"repeats", absl::GetFlag(FLAGS_repeats)},
        {"read_bandwidth",
         {{"start_gb_per_s", bw_start.gb_per_s},
          {"end_gb_per_s", bw_end.gb_per_s},
          {"used_gb_per_s", bandwidth},
          {"buffer_bytes", bw_start.bytes},
          {"threads", threads},
          {"avx2", bw_start.avx2}}},
        {"results", rows}};
    std::ofstream out(path);
    out << doc.dump(2) << "\n";
    if (!out) {
      std::cerr << "qs_decode_bench: cannot write " << path << "\n";
      return 1;
    }
  }
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "batch-1 prefill/decode tok/s per quantization preset, as ratios to our bf16/fp32.\n"
      "  qs_decode_bench --model DIR [--methods fp32,bf16,hqq4] [--threads N] [--json FILE]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << "qs_decode_bench: unexpected argument '" << positional[1] << "'\n";
    return 2;
  }
  return Main();
}

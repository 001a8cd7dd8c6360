// qs_serve_bench: the model behind the real gRPC server, under 1, 4 and 16 concurrent
// Generate streams, and what the serving path costs on top of the engine.
//
// Starts an in-process server::Server on a free localhost port with the engine's loader, loads
// --model with one --preset, then:
//  * for each level in --streams: that many client threads open Generate streams at once
//    (distinct text prompts, --new_tokens tokens, greedy, ignore_eos) over one channel and
//    record every message's arrival. Aggregate tok/s = all tokens / (last stream end - first
//    stream start); TTFT = call start -> first token; inter-token latency = gap between
//    messages / tokens in the later message. p50/p99 are over all streams of the level.
//  * overhead: the same request, --overhead_repeats times each, interleaved, as
//      direct_ids     engine Generate with the prompt's token ids, greedy (the baseline)
//      direct_text    engine Generate with the prompt text (adds tokenization)
//      direct_sampled engine Generate with the token ids, temperature/top-k/top-p sampling
//      grpc_text      one gRPC stream with the prompt text, greedy
//    and reports median wall times and each difference as a % of direct_ids.
//
// Each level runs --rounds times and pools its samples.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "bench/bench_common.h"
#include "engine/engine_api.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "nlohmann/json.hpp"
#include "quantserve/v1/inference_service.grpc.pb.h"
#include "server/server.h"
#include "server/server_metrics.h"

#ifndef QS_BENCH_PRESETS_FILE
#define QS_BENCH_PRESETS_FILE "bench/presets.json"
#endif

ABSL_FLAG(std::string, model, "", "Required. Model directory (bench/make_bench_model.py).");
ABSL_FLAG(std::string, preset, "bf16", "Preset name from --presets_file.");
ABSL_FLAG(std::string, presets_file, QS_BENCH_PRESETS_FILE, "Preset table (JSON).");
ABSL_FLAG(int, threads, 0, "Intra-op threads of the model; 0 = all cores.");
ABSL_FLAG(std::string, streams, "1,4,16", "Concurrency levels (comma-separated).");
ABSL_FLAG(int, new_tokens, 128, "Tokens per request (greedy, ignore_eos).");
ABSL_FLAG(int, rounds, 1, "Runs per concurrency level (samples are pooled).");
ABSL_FLAG(int, overhead_repeats, 5, "Runs of each overhead variant (medians are reported).");
ABSL_FLAG(std::string, json, "", "Also write the results as JSON to this file.");

namespace {

namespace bench = quantserve::bench;
namespace engine = quantserve::engine;
namespace server = quantserve::server;
namespace v1 = quantserve::v1;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// The prompt text; stream i of a level prepends "(i) " so every prompt differs.
constexpr char kPassage[] =
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void; and darkness was upon the face of the deep.";
constexpr char kModelName[] = "bench";

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One client stream, times relative to the level's common epoch.
struct StreamSample {
  double start_s = 0;
  double end_s = 0;
  double ttft_s = 0;
  int tokens = 0;
  std::vector<double> itl_s;
  std::string error;
};

v1::GenerateRequest MakeRequest(const std::string& prompt, int new_tokens) {
  v1::GenerateRequest req;
  req.set_model(kModelName);
  req.set_prompt(prompt);
  req.set_max_new_tokens(new_tokens);
  req.set_ignore_eos(true);  // sampling left unset: greedy
  return req;
}

StreamSample RunStream(v1::InferenceService::Stub& stub, const v1::GenerateRequest& req,
                       Clock::time_point epoch) {
  StreamSample s;
  grpc::ClientContext ctx;
  const Clock::time_point t0 = Clock::now();
  s.start_s = std::chrono::duration<double>(t0 - epoch).count();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  double prev = -1;
  while (reader->Read(&resp)) {
    const double t = Since(t0);
    const int n = resp.token_ids_size();
    if (n == 0) continue;
    if (prev < 0) {
      s.ttft_s = t;
    } else {
      for (int i = 0; i < n; ++i) s.itl_s.push_back((t - prev) / n);
    }
    prev = t;
    s.tokens += n;
  }
  const grpc::Status status = reader->Finish();
  s.end_s = std::chrono::duration<double>(Clock::now() - epoch).count();
  if (!status.ok()) s.error = absl::StrCat("gRPC ", status.error_code(), ": ", status.error_message());
  return s;
}

struct LevelResult {
  int streams = 0;
  int requests = 0;
  int tokens = 0;
  double seconds = 0;
  double tokens_per_s = 0;
  std::vector<double> ttft_s;
  std::vector<double> itl_s;
  std::string error;
};

LevelResult RunLevel(v1::InferenceService::Stub& stub, int streams, int rounds, int new_tokens) {
  LevelResult r{.streams = streams};
  for (int round = 0; round < rounds; ++round) {
    std::vector<StreamSample> samples(streams);
    // Release all clients together so the streams really overlap.
    std::mutex mu;
    std::condition_variable cv;
    bool go = false;
    std::vector<std::thread> clients;
    for (int i = 0; i < streams; ++i) {
      clients.emplace_back([&, i] {
        const v1::GenerateRequest req =
            MakeRequest(absl::StrCat("(", round * streams + i, ") ", kPassage), new_tokens);
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return go; });
        lock.unlock();
        samples[i] = RunStream(stub, req, Clock::time_point{});
      });
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      go = true;
    }
    cv.notify_all();
    for (std::thread& t : clients) t.join();
    double first = samples.front().start_s, last = samples.front().end_s;
    for (const StreamSample& s : samples) {
      if (!s.error.empty() && r.error.empty()) r.error = s.error;
      first = std::min(first, s.start_s);
      last = std::max(last, s.end_s);
      r.tokens += s.tokens;
      r.ttft_s.push_back(s.ttft_s);
      r.itl_s.insert(r.itl_s.end(), s.itl_s.begin(), s.itl_s.end());
    }
    r.requests += streams;
    r.seconds += last - first;
  }
  r.tokens_per_s = r.seconds > 0 ? r.tokens / r.seconds : 0;
  return r;
}

std::string Ms(double seconds) { return bench::Fixed(1000 * seconds, 1); }

int Main() {
  const std::string model_arg = absl::GetFlag(FLAGS_model);
  if (model_arg.empty()) {
    std::cerr << "qs_serve_bench: --model is required\n";
    return 2;
  }
  std::error_code ec;
  const std::filesystem::path model_dir = std::filesystem::canonical(model_arg, ec);
  if (ec) {
    std::cerr << "qs_serve_bench: --model " << model_arg << ": " << ec.message() << "\n";
    return 2;
  }
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> levels;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_streams), ',',
                                               absl::SkipWhitespace())) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      std::cerr << "qs_serve_bench: --streams must list positive integers\n";
      return 2;
    }
    levels.push_back(n);
  }
  absl::StatusOr<std::vector<bench::Preset>> all =
      bench::ReadPresets(absl::GetFlag(FLAGS_presets_file));
  absl::StatusOr<std::vector<bench::Preset>> selected =
      all.ok() ? bench::SelectPresets(*all, absl::GetFlag(FLAGS_preset)) : all.status();
  if (!selected.ok() || selected->size() != 1) {
    std::cerr << "qs_serve_bench: --preset: "
              << (selected.ok() ? "name exactly one preset" : selected.status().ToString()) << "\n";
    return 2;
  }
  const bench::Preset preset = selected->front();
  const int new_tokens = absl::GetFlag(FLAGS_new_tokens);

  std::unique_ptr<server::ServerMetrics> metrics = server::ServerMetrics::CreateDefault();
  server::Server::Options options;
  options.listen_address = "127.0.0.1:0";
  options.model_root = model_dir.parent_path().string();
  options.loader = engine::LoadServableModel;
  options.metrics = metrics.get();
  options.num_threads = threads;
  options.drain_timeout = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<server::Server>> created = server::Server::Create(options);
  if (!created.ok()) {
    std::cerr << "qs_serve_bench: cannot start the server: " << created.status() << "\n";
    return 1;
  }
  server::Server& srv = **created;
  server::LoadRequest load{.name = kModelName,
                           .path = model_dir.filename().string(),
                           .quantization_config_json = preset.quantization_config_json,
                           .dtype = preset.dtype,
                           .num_threads = threads};
  std::cerr << "loading " << model_dir << " as " << preset.name << "\n";
  absl::StatusOr<server::ModelSnapshot> snapshot = srv.registry().Load(load);
  if (!snapshot.ok()) {
    std::cerr << "qs_serve_bench: load failed: " << snapshot.status() << "\n";
    return 1;
  }
  absl::StatusOr<server::ModelHandle> acquired = srv.registry().Acquire(kModelName);
  if (!acquired.ok()) {
    std::cerr << "qs_serve_bench: " << acquired.status() << "\n";
    return 1;
  }
  // Pins the model for the direct runs, as a request would; released before shutdown.
  std::optional<server::ModelHandle> pin(std::move(*acquired));
  engine::ServableModel& model = pin->model();

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(srv.address(), grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::InferenceService::Stub> stub = v1::InferenceService::NewStub(channel);
  // Warm-up: connects the channel and runs the model once.
  if (StreamSample w = RunStream(*stub, MakeRequest(kPassage, 8), Clock::now()); !w.error.empty()) {
    std::cerr << "qs_serve_bench: warm-up stream failed: " << w.error << "\n";
    return 1;
  }

  std::vector<LevelResult> results;
  for (int level : levels) {
    std::cerr << "streams " << level << "...\n";
    results.push_back(RunLevel(*stub, level, absl::GetFlag(FLAGS_rounds), new_tokens));
  }

  // Overhead: the same request four ways, interleaved so drift hits each alike.
  const std::string prompt = kPassage;
  absl::StatusOr<engine::TokenizeResult> tokens = model.Tokenize(prompt, true);
  if (!tokens.ok()) {
    std::cerr << "qs_serve_bench: tokenize: " << tokens.status() << "\n";
    return 1;
  }
  auto direct = [&](bool ids, bool sampled) -> absl::StatusOr<double> {
    engine::GenerateParams p;
    if (ids) {
      p.input_ids = tokens->token_ids;
    } else {
      p.prompt = prompt;
    }
    p.max_new_tokens = new_tokens;
    p.ignore_eos = true;
    if (sampled) {
      p.sampling = {.temperature = 0.8f, .top_k = 50, .top_p = 0.95f, .seed = 7};
    }
    absl::StatusOr<bench::TimedGeneration> g = bench::RunGeneration(model, std::move(p));
    if (!g.ok()) return g.status();
    if (g->finish.completion_tokens != new_tokens) {
      return absl::InternalError(absl::StrCat("generated ", g->finish.completion_tokens));
    }
    return g->total_s;
  };
  std::vector<double> direct_ids, direct_text, direct_sampled, grpc_text;
  std::string overhead_error;
  for (int i = 0; overhead_error.empty() && i < absl::GetFlag(FLAGS_overhead_repeats); ++i) {
    for (auto [out, ids, sampled] : {std::tuple{&direct_ids, true, false},
                                     std::tuple{&direct_text, false, false},
                                     std::tuple{&direct_sampled, true, true}}) {
      absl::StatusOr<double> s = direct(ids, sampled);
      if (!s.ok()) {
        overhead_error = s.status().ToString();
        break;
      }
      out->push_back(*s);
    }
    StreamSample g = RunStream(*stub, MakeRequest(prompt, new_tokens), Clock::now());
    if (!g.error.empty() || g.tokens != new_tokens) {
      overhead_error = g.error.empty() ? absl::StrCat("gRPC stream gave ", g.tokens, " tokens")
                                       : g.error;
    }
    grpc_text.push_back(g.end_s - g.start_s);
  }
  const double base = bench::Median(direct_ids);
  auto pct = [&](double t) { return base > 0 ? 100 * (t - base) / base : 0; };

  std::printf(
      "\n## qs_serve_bench: %s, preset %s (%s, %s)\n\nthreads %d, %d new tokens per request, "
      "greedy, ignore_eos, prompt of %zu tokens, %d round(s) per level\n\n",
      model_dir.c_str(), preset.name.c_str(), snapshot->description->quant_method.c_str(),
      snapshot->description->dtype.c_str(), threads, new_tokens, tokens->token_ids.size(),
      absl::GetFlag(FLAGS_rounds));
  std::printf(
      "| streams | requests | tokens | seconds | aggregate tok/s | vs 1 stream | TTFT p50 ms | "
      "TTFT p99 ms | ITL p50 ms | ITL p99 ms |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const LevelResult* one = nullptr;
  for (const LevelResult& r : results) {
    if (r.streams == 1 && r.error.empty()) one = &r;
  }
  json levels_json = json::array();
  bool failed = !overhead_error.empty();
  for (const LevelResult& r : results) {
    failed |= !r.error.empty();
    std::printf("| %d | %d | %d | %s | %s | %s | %s | %s | %s | %s |%s\n", r.streams, r.requests,
                r.tokens, bench::Fixed(r.seconds, 2).c_str(),
                bench::Fixed(r.tokens_per_s, 2).c_str(),
                one != nullptr && one->tokens_per_s > 0
                    ? (bench::Fixed(r.tokens_per_s / one->tokens_per_s, 2) + "x").c_str()
                    : "-",
                Ms(bench::Percentile(r.ttft_s, 50)).c_str(),
                Ms(bench::Percentile(r.ttft_s, 99)).c_str(),
                Ms(bench::Percentile(r.itl_s, 50)).c_str(),
                Ms(bench::Percentile(r.itl_s, 99)).c_str(),
                r.error.empty() ? "" : (" error: " + r.error).c_str());
    levels_json.push_back({{"streams", r.streams},
                           {"requests", r.requests},
                           {"tokens", r.tokens},
                           {"seconds", r.seconds},
                           {"tokens_per_s", r.tokens_per_s},
                           {"ttft_p50_s", bench::Percentile(r.ttft_s, 50)},
                           {"ttft_p99_s", bench::Percentile(r.ttft_s, 99)},
                           {"itl_p50_s", bench::Percentile(r.itl_s, 50)},
                           {"itl_p99_s", bench::Percentile(r.itl_s, 99)},
                           {"error", r.error}});
  }
  json overhead_json;
  if (overhead_error.empty()) {
    const double text = bench::Median(direct_text), sampled = bench::Median(direct_sampled),
                 grpc = bench::Median(grpc_text);
    std::printf(
        "\nOverhead on one %d-token request (median of %zu, interleaved):\n\n"
        "| path | seconds | vs direct_ids |\n|---|---:|---:|\n"
        "| direct_ids (engine, token ids, greedy) | %.4f | - |\n"
        "| direct_text (+ tokenization) | %.4f | %+.2f%% |\n"
        "| direct_sampled (token ids, T=0.8 top_k=50 top_p=0.95) | %.4f | %+.2f%% |\n"
        "| grpc_text (gRPC + tokenization, greedy) | %.4f | %+.2f%% |\n"
        "\ngRPC + tokenization + sampling overhead: %+.2f%% of a %d-token decode\n",
        new_tokens, direct_ids.size(), base, text, pct(text), sampled, pct(sampled), grpc,
        pct(grpc), pct(grpc) + pct(sampled), new_tokens);
    overhead_json = {{"direct_ids_s", direct_ids},
                     {"direct_text_s", direct_text},
                     {"direct_sampled_s", direct_sampled},
                     {"grpc_text_s", grpc_text},
                     {"tokenization_pct", pct(text)},
                     {"sampling_pct", pct(sampled)},
                     {"grpc_and_tokenization_pct", pct(grpc)},
                     {"total_pct", pct(grpc) + pct(sampled)}};
  } else {
    std::printf("\noverhead: error: %s\n", overhead_error.c_str());
    overhead_json = {{"error", overhead_error}};
  }
  std::fflush(stdout);

  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    json doc = {{"benchmark", "qs_serve_bench"},
                {"model", model_dir.string()},
                {"preset", preset.name},
                {"dtype", preset.dtype},
                {"threads", threads},
                {"new_tokens", new_tokens},
                {"prompt_tokens", tokens->token_ids.size()},
                {"levels", levels_json},
                {"overhead", overhead_json}};
    std::ofstream out(path);
    out << doc.dump(2) << "\n";
    if (!out) {
      std::cerr << "qs_serve_bench: cannot write " << path << "\n";
      failed = true;
    }
  }
  pin.reset();
  srv.Shutdown(absl::Seconds(5));
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "aggregate tok/s, TTFT and inter-token latency at 1/4/16 gRPC streams, and the serving "
      "overhead.\n  qs_serve_bench --model DIR [--preset bf16] [--streams 1,4,16] [--json FILE]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << "qs_serve_bench: unexpected argument '" << positional[1] << "'\n";
    return 2;
  }
  return Main();
}

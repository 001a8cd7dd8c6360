#include "bench/bench_common.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "nlohmann/json.hpp"

namespace quantserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Sums 64-bit lanes of [p, p + n) with four independent AVX2 accumulators; n is a multiple
// of 128 and p 32-byte aligned. The sum only keeps the loads from being optimized away.
__attribute__((target("avx2"))) uint64_t SumAvx2(const uint8_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

uint64_t SumPlain(const uint8_t* p, size_t n) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i < n / 8; i += 4) {
    a0 += w[i];
    a1 += w[i + 1];
    a2 += w[i + 2];
    a3 += w[i + 3];
  }
  return a0 + a1 + a2 + a3;
}

// Runs fn(thread_index) on `threads` threads and returns the wall seconds until all finish.
template <typename Fn>
double RunOnThreads(int threads, Fn fn) {
  std::vector<std::thread> pool;
  pool.reserve(threads);
  const Clock::time_point start = Clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back(fn, t);
  for (std::thread& th : pool) th.join();
  return SecondsSince(start);
}

// Collects one generation's chunks; the engine calls it from its scheduler thread.
class TimingObserver : public engine::GenerateObserver {
 public:
  explicit TimingObserver(Clock::time_point start) : start_(start) {}

  void OnChunk(engine::GenerateChunk chunk) override {
    const double t = SecondsSince(start_);
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < chunk.token_ids.size(); ++i) token_times_.push_back(t);
  }
  void OnFinish(absl::StatusOr<engine::GenerateFinish> finish) override {
    const double t = SecondsSince(start_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      finish_ = std::move(finish);
      total_s_ = t;
    }
    done_.Notify();
  }

  absl::StatusOr<TimedGeneration> Wait() {
    done_.WaitForNotification();
    std::lock_guard<std::mutex> lock(mu_);
    if (!finish_.ok()) return finish_.status();
    TimedGeneration out;
    out.finish = *finish_;
    out.total_s = total_s_;
    out.token_times_s = token_times_;
    out.time_to_first_token_s = token_times_.empty() ? total_s_ : token_times_.front();
    return out;
  }

 private:
  const Clock::time_point start_;
  std::mutex mu_;
  std::vector<double> token_times_;
  absl::StatusOr<engine::GenerateFinish> finish_ = absl::UnknownError("not finished");
  double total_s_ = 0;
  absl::Notification done_;
};

}  // namespace

absl::StatusOr<std::vector<Preset>> ReadPresets(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read preset table ", path));
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("presets") ||
      !doc["presets"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a JSON object with a \"presets\" array"));
  }
  std::vector<Preset> out;
  for (const nlohmann::json& row : doc["presets"]) {
    if (!row.is_object() || !row.contains("name") || !row["name"].is_string() ||
        !row.contains("dtype") || !row["dtype"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": every preset needs string \"name\" and \"dtype\": ", row.dump()));
    }
    Preset p{.name = row["name"].get<std::string>(),
             .dtype = row["dtype"].get<std::string>()};
    if (row.contains("quantization_config") && !row["quantization_config"].is_null()) {
      if (!row["quantization_config"].is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": preset ", p.name, ": quantization_config must be an object"));
      }
      p.quantization_config_json = row["quantization_config"].dump();
    }
    if (row.contains("bits_per_weight")) {
      if (!row["bits_per_weight"].is_number() || row["bits_per_weight"].get<double>() <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": preset ", p.name, ": bits_per_weight must be a positive number"));
      }
      p.bits_per_weight = row["bits_per_weight"].get<double>();
    }
    if (row.contains("kernel_activations")) {
      const nlohmann::json& a = row["kernel_activations"];
      if (!a.is_string() || (a != "int8" && a != "int16")) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": preset ", p.name, ": kernel_activations must be int16|int8"));
      }
      p.activation_bits = a == "int8" ? 8 : 16;
    }
    out.push_back(std::move(p));
  }
  return out;
}

absl::StatusOr<std::vector<Preset>> SelectPresets(const std::vector<Preset>& all,
                                                  const std::string& csv) {
  std::vector<Preset> out;
  for (absl::string_view name : absl::StrSplit(csv, ',', absl::SkipWhitespace())) {
    name = absl::StripAsciiWhitespace(name);
    auto it = std::find_if(all.begin(), all.end(), [&](const Preset& p) { return p.name == name; });
    if (it == all.end()) {
      std::vector<std::string> known;
      for (const Preset& p : all) known.push_back(p.name);
      return absl::InvalidArgumentError(absl::StrCat("unknown preset '", std::string(name),
                                                     "'; known: ", absl::StrJoin(known, ",")));
    }
    out.push_back(*it);
  }
  if (out.empty()) return absl::InvalidArgumentError("no presets selected");
  return out;
}

ReadBandwidth MeasureReadBandwidth(int64_t bytes, int threads, int passes) {
  threads = std::max(1, threads);
  // Each thread's slice is a multiple of 128 bytes so the unrolled loops need no tail.
  const size_t slice = static_cast<size_t>(bytes / threads) / 128 * 128;
  const size_t total = slice * threads;
  std::unique_ptr<uint8_t, decltype(&std::free)> buffer(
      static_cast<uint8_t*>(std::aligned_alloc(64, total)), &std::free);
  ReadBandwidth out{.bytes = static_cast<int64_t>(total), .threads = threads, .passes = passes};
  if (buffer == nullptr || slice == 0) return out;
  out.avx2 = __builtin_cpu_supports("avx2");
  uint8_t* base = buffer.get();
  RunOnThreads(threads, [&](int t) { std::memset(base + t * slice, t + 1, slice); });
  std::vector<uint64_t> sums(threads);
  double best = 0;
  for (int pass = 0; pass <= passes; ++pass) {  // pass 0 warms up and is not counted
    const double s = RunOnThreads(threads, [&](int t) {
      sums[t] += out.avx2 ? SumAvx2(base + t * slice, slice) : SumPlain(base + t * slice, slice);
    });
    if (pass > 0 && s > 0) best = std::max(best, static_cast<double>(total) / s / 1e9);
  }
  // Keep the sums observable so the loads cannot be elided.
  uint64_t sink = 0;
  for (uint64_t s : sums) sink ^= s;
  if (sink == 0x5eed) std::fputc(' ', stderr);
  out.gb_per_s = best;
  return out;
}

double TimedGeneration::DecodeTokensPerSecond() const {
  if (token_times_s.size() < 2) return 0;
  const double span = token_times_s.back() - token_times_s.front();
  return span > 0 ? static_cast<double>(token_times_s.size() - 1) / span : 0;
}

absl::StatusOr<TimedGeneration> RunGeneration(engine::ServableModel& model,
                                              engine::GenerateParams params) {
  auto observer = std::make_shared<TimingObserver>(Clock::now());
  std::unique_ptr<engine::GenerationHandle> handle = model.Generate(std::move(params), observer);
  return observer->Wait();
}

std::vector<int32_t> RandomTokenIds(int n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(
      2, static_cast<int32_t>(std::max<int64_t>(vocab, 3) - 1));
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

double Median(std::vector<double> values) { return Percentile(std::move(values), 50); }

int64_t CurrentRssBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

std::string Fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  return buf;
}

}  // namespace quantserve::bench

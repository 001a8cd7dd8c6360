#include "server/server_metrics.h"

#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace quantserve::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Scrape(const ServerMetrics& metrics) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, metrics.registry()->Collect());
  return out.str();
}

TEST(ServerMetricsTest, RejectsBadBuckets) {
  ServerMetrics::Options options;
  options.request_duration_buckets = {1, 1};
  EXPECT_EQ(ServerMetrics::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = ServerMetrics::Options();
  options.inter_token_latency_buckets.clear();
  EXPECT_EQ(ServerMetrics::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

std::unique_ptr<ServerMetrics> WithVllmAliases() {
  ServerMetrics::Options options;
  options.vllm_compatible_gauges = true;
  return *ServerMetrics::Create(options);
}

TEST(ServerMetricsTest, RecordsLabelledRequestAndGenerationSeries) {
  auto metrics = WithVllmAliases();
  const ModelLabels labels{.model = "tiny", .quant_method = "hqq"};
  metrics->RecordRequest("Generate", labels, absl::StatusCode::kOk, 0.2);
  metrics->RequestQueued(labels);
  metrics->RequestStarted(labels);
  metrics->RecordTimeToFirstToken(labels, 0.05);
  metrics->RecordInterTokenLatency(labels, 0.02, 2);
  metrics->RecordGeneration(labels, 5, 3, "length");
  const std::string text = Scrape(*metrics);
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_rpc_requests_total{code="OK",model="tiny",quant_method="hqq",route="",rpc="Generate",variant="tiny"} 1)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_rpc_request_duration_seconds_count{model="tiny",quant_method="hqq",route="",rpc="Generate",variant="tiny"} 1)"));
  EXPECT_THAT(
      text,
      HasSubstr(R"(quantserve_inference_requests_running{model="tiny",quant_method="hqq"} 1)"));
  EXPECT_THAT(
      text,
      HasSubstr(R"(quantserve_inference_requests_waiting{model="tiny",quant_method="hqq"} 0)"));
  EXPECT_THAT(text, HasSubstr(R"(vllm:num_requests_running{model_name="tiny"} 1)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_generate_time_to_first_token_seconds_count{model="tiny",quant_method="hqq",route="",variant="tiny"} 1)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_generate_inter_token_latency_seconds_count{model="tiny",quant_method="hqq",route="",variant="tiny"} 2)"));
  EXPECT_THAT(
      text,
      HasSubstr(R"(quantserve_generate_prompt_tokens_total{model="tiny",quant_method="hqq",route="",variant="tiny"} 5)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_generate_generated_tokens_total{model="tiny",quant_method="hqq",route="",variant="tiny"} 3)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_generate_finished_total{model="tiny",quant_method="hqq",reason="length",route="",variant="tiny"} 1)"));
  metrics->RequestEnded(labels, true);
  EXPECT_THAT(Scrape(*metrics), HasSubstr(R"(vllm:num_requests_running{model_name="tiny"} 0)"));
}

TEST(ServerMetricsTest, ModelGaugesFollowTheLifecycle) {
  auto metrics = ServerMetrics::CreateDefault();
  metrics->SetModelState({.model = "m", .quant_method = "eetq"}, ModelState::kLoading);
  EXPECT_THAT(Scrape(*metrics),
              HasSubstr(R"(quantserve_model_state{model="m",quant_method="eetq"} 1)"));
  // The engine reports the final method; the series is replaced, not duplicated.
  const ModelLabels ready{.model = "m", .quant_method = "bitsandbytes"};
  metrics->RecordModelLoad(ready, absl::StatusCode::kOk, 1.5);
  metrics->SetModelFacts(ready, 1000, 250, 1200);
  metrics->SetModelState(ready, ModelState::kReady);
  std::string text = Scrape(*metrics);
  EXPECT_THAT(text, Not(HasSubstr(R"(quantserve_model_state{model="m",quant_method="eetq"})")));
  EXPECT_THAT(text,
              HasSubstr(R"(quantserve_model_state{model="m",quant_method="bitsandbytes"} 2)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_model_memory_footprint_bytes{model="m",quant_method="bitsandbytes"} 1000)"));
  EXPECT_THAT(
      text, HasSubstr(R"(quantserve_model_parameters{model="m",quant_method="bitsandbytes"} 250)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_model_peak_load_memory_bytes{model="m",quant_method="bitsandbytes"} 1200)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_model_load_duration_seconds{model="m",quant_method="bitsandbytes"} 1.5)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_model_loads_total{code="OK",model="m",quant_method="bitsandbytes"} 1)"));
  metrics->RemoveModel("m");
  text = Scrape(*metrics);
  EXPECT_THAT(text, Not(HasSubstr(R"(quantserve_model_state{model="m")")));
  EXPECT_THAT(text, Not(HasSubstr(R"(quantserve_model_memory_footprint_bytes{model="m")")));
  // Counters outlive the model.
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(quantserve_model_loads_total{code="OK",model="m",quant_method="bitsandbytes"} 1)"));
}

TEST(ServerMetricsTest, KernelGaugesAreReplacedAndRemovedWithTheModel) {
  auto metrics = ServerMetrics::CreateDefault();
  const ModelLabels m{.model = "m", .quant_method = "bitsandbytes"};
  metrics->SetModelKernels(m, {{"lut4_gemv_avx2", 28}, {"aten_linear", 1}}, 1 << 20);
  std::string text = Scrape(*metrics);
  EXPECT_THAT(text, HasSubstr(R"(quantserve_model_linear_layers{kernel="lut4_gemv_avx2",model="m",quant_method="bitsandbytes"} 28)"));
  EXPECT_THAT(text, HasSubstr(R"(quantserve_model_linear_layers{kernel="aten_linear",model="m",quant_method="bitsandbytes"} 1)"));
  EXPECT_THAT(text, HasSubstr(R"(quantserve_model_kv_cache_budget_bytes{model="m",quant_method="bitsandbytes"} 1048576)"));
  // A reload with other kernels replaces the series instead of adding to them.
  metrics->SetModelKernels(m, {{"dequantize_linear_ref", 29}}, 2048);
  text = Scrape(*metrics);
  EXPECT_THAT(text, Not(HasSubstr("lut4_gemv_avx2")));
  EXPECT_THAT(text, HasSubstr(R"(quantserve_model_linear_layers{kernel="dequantize_linear_ref",model="m",quant_method="bitsandbytes"} 29)"));
  metrics->RemoveModel("m");
  text = Scrape(*metrics);
  EXPECT_THAT(text, Not(HasSubstr(R"(quantserve_model_linear_layers{)")));
  EXPECT_THAT(text, Not(HasSubstr(R"(quantserve_model_kv_cache_budget_bytes{)")));
}

TEST(ServerMetricsTest, VllmAliasesAreOptIn) {
  auto metrics = ServerMetrics::CreateDefault();
  metrics->RequestQueued({.model = "m", .quant_method = "none"});
  metrics->SetKvCacheUsage({.model = "m", .quant_method = "none"}, 1, 2);
  EXPECT_THAT(Scrape(*metrics), Not(HasSubstr("vllm:")));
}

// KV usage is a 0-1 fraction of the budget (vLLM's kv_cache_usage_perc is too), clamped, 0
// without a budget, and goes away with the model.
TEST(ServerMetricsTest, KvCacheUsageIsAFractionAndFollowsTheModel) {
  auto metrics = WithVllmAliases();
  const ModelLabels m{.model = "m", .quant_method = "hqq"};
  metrics->SetKvCacheUsage(m, 256, 1024);
  std::string text = Scrape(*metrics);
  EXPECT_THAT(text, HasSubstr(R"(quantserve_model_kv_cache_usage_ratio{model="m",quant_method="hqq"} 0.25)"));
  EXPECT_THAT(text, HasSubstr(R"(vllm:kv_cache_usage_perc{model_name="m"} 0.25)"));
  metrics->SetKvCacheUsage(m, 4096, 1024);
  EXPECT_THAT(Scrape(*metrics), HasSubstr(R"(vllm:kv_cache_usage_perc{model_name="m"} 1)"));
  metrics->SetKvCacheUsage(m, 5, 0);
  EXPECT_THAT(Scrape(*metrics), HasSubstr(R"(vllm:kv_cache_usage_perc{model_name="m"} 0)"));
  metrics->RemoveModel("m");
  text = Scrape(*metrics);
  EXPECT_THAT(text, Not(HasSubstr("quantserve_model_kv_cache_usage_ratio{")));
  EXPECT_THAT(text, Not(HasSubstr("vllm:kv_cache_usage_perc{")));
}

}  // namespace
}  // namespace quantserve::server

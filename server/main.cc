// quantserve: the gRPC model server binary. Wires flags, logging, metrics exposition and the
// real engine into server::Server, then serves until SIGINT/SIGTERM.

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/internal/program_name.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/byte_size.h"
#include "common/logging.h"
#include "engine/engine_api.h"
#include "prometheus/exposer.h"
#include "server/server.h"
#include "server/server_metrics.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "host:port to serve gRPC (ModelService, InferenceService, grpc.health.v1, reflection) "
          "on. Port 0 picks a free port; the startup line reports it.");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "host:port for the Prometheus /metrics HTTP endpoint. Empty disables it.");
ABSL_FLAG(std::string, model_root, "",
          "Required. Directory holding model directories; every LoadModel path and startup "
          "config path is resolved inside it (paths escaping it are refused).");
ABSL_FLAG(bool, allow_symlinks_outside_root, false,
          "Let model directories under --model_root be symlinks to a model store elsewhere "
          "(read only: SaveModel never writes outside --model_root). Symlinks that stay inside "
          "the root, as in Hugging Face cache layouts, work without it.");
ABSL_FLAG(std::string, config, "",
          "Startup config JSON to preload models from, e.g. "
          "{\"models\":[{\"name\":\"tiny\",\"path\":\"tiny-llama\","
          "\"quantization_config\":{\"quant_method\":\"hqq\",\"nbits\":4},"
          "\"dtype\":\"float32\",\"device_map\":\"cpu\"}]}. Models load in the background; a "
          "failed one is reported FAILED and the server keeps serving.");
ABSL_FLAG(std::string, log_level, "info", "Log threshold: debug|info|warning|error.");
ABSL_FLAG(int, load_threads, 2, "Model loads that may run at the same time.");
ABSL_FLAG(int, request_threads, 4,
          "Threads running blocking inference calls (Embed, Score, Tokenize) off the gRPC "
          "threads.");
ABSL_FLAG(int, num_threads, 0,
          "Intra-op threads per model for loads that do not set their own; 0 = the library "
          "default.");
ABSL_FLAG(int, max_request_bytes, 16 << 20,
          "Largest gRPC request message accepted, in bytes; larger ones get "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_new_tokens_limit, 4096,
          "Largest GenerateRequest.max_new_tokens accepted (INVALID_ARGUMENT above it).");
ABSL_FLAG(int, max_embed_texts, 256, "Most texts in one EmbedRequest.");
ABSL_FLAG(int, max_embed_bytes, 1 << 20, "Most bytes of text in one EmbedRequest.");
ABSL_FLAG(int, max_batch_size, 32,
          "Continuous batching: most sequences of one model decoded together in a step; "
          "requests beyond it wait in the model's queue.");
ABSL_FLAG(int, max_prefill_tokens, 2048,
          "Most prompt tokens a model prefills in one step: a longer prompt is prefilled in "
          "chunks of this size over several steps, so a step never stalls the streams already "
          "decoding for longer than this many prompt tokens take; also the padded token "
          "budget of one Embed batch.");
ABSL_FLAG(std::string, kv_cache_memory, "auto",
          "KV cache budget per model, e.g. 2GiB or 512MB; 'auto' = enough for --max_batch_size "
          "sequences at the model's full context. Requests wait while the budget is in use; one "
          "that could never fit is refused with RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_queued_per_model, 256,
          "Requests waiting for a place in one model's batch beyond which new ones get "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(bool, deterministic, false,
          "Make each request's output independent of what else is in its batch (rows run as "
          "their own forwards inside the shared step): bit-identical to a solo run, at the cost "
          "of batching's throughput.");
ABSL_FLAG(double, drain_timeout_seconds, 30,
          "On shutdown and unload: how long in-flight requests may finish before they are "
          "cancelled.");
ABSL_FLAG(bool, vllm_compatible_metrics, false,
          "Also export vllm:num_requests_waiting, vllm:num_requests_running and "
          "vllm:kv_cache_usage_perc{model_name}, the gauges routers and autoscalers written for "
          "vLLM read (Gateway API Inference Extension, production-stack).");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain: the gRPC port speaks TLS only (with --tls_key_file). Re-read "
          "when it changes. Empty = plaintext (terminate TLS in front, or keep the port "
          "private). The metrics endpoint stays plain HTTP.");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, health_listen, "",
          "host:port of a second, plaintext gRPC port serving only grpc.health.v1 (the same "
          "statuses as the main port), for probes that cannot speak TLS such as Kubernetes' "
          "native gRPC probes. Empty = none.");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: clients must present a certificate it signed (mutual TLS).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File of bearer tokens (one per line, '#' comments) that LoadModel, UnloadModel, "
          "SaveModel, SetRoute and DeleteRoute require as 'authorization: Bearer <token>' "
          "metadata (missing: UNAUTHENTICATED, wrong: PERMISSION_DENIED). Re-read when it "
          "changes. Empty = those RPCs are open to anyone who reaches the port.");
ABSL_FLAG(std::string, inference_token_file, "",
          "File of bearer tokens that Generate, Embed, Score, Tokenize, Compare and the model "
          "and route listings require (admin tokens work too). Empty = open. Health and "
          "reflection are always open.");

namespace {

using quantserve::common::Kv;
namespace server = quantserve::server;

constexpr char kUsage[] =
    "a gRPC server for quantized transformer models.\n"
    "\n"
    "Loads Hugging Face-format models (quantizing them while their weights stream in) and "
    "serves\n"
    "Generate, Embed, Score and Tokenize, with Prometheus metrics per model and quant_method.\n"
    "\n"
    "Usage:\n"
    "  quantserve --model_root=DIR [--listen=0.0.0.0:50051] [--metrics_listen=0.0.0.0:9090]\n"
    "             [--config=startup.json] [--log_level=info]\n"
    "\n"
    "Example:\n"
    "  quantserve --model_root=/models --config=/etc/quantserve/startup.json\n"
    "  quantserve-cli --server=localhost:50051 load kjv kjv-llama --dtype=bfloat16\n"
    "\n"
    "SIGINT/SIGTERM shut down gracefully (--drain_timeout_seconds); a second signal exits at "
    "once.\n"
    "--helpfull lists the flags of the libraries too.";

bool IsOurFlagFile(absl::string_view path) { return absl::EndsWith(path, "server/main.cc"); }

// `--help`/`-h` print our flags and exit 0 (absl's own handler exits 1, which reads as a
// failure to scripts and container probes).
bool PrintHelpIfAsked(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpshort") {
      absl::flags_internal::FlagsHelp(std::cout, "server/main.cc",
                                      absl::flags_internal::HelpFormat::kHumanReadable, kUsage);
      return true;
    }
  }
  return false;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "quantserve: %s\nRun quantserve --help for usage.\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_helpshort_flags = IsOurFlagFile;
  usage_config.contains_help_flags = IsOurFlagFile;
  usage_config.version_string = [] { return std::string("quantserve 0.1.0\n"); };
  absl::SetFlagsUsageConfig(usage_config);
  absl::flags_internal::SetProgramInvocationName(argv[0]);
  if (PrintHelpIfAsked(argc, argv)) return 0;
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    return UsageError(std::string("unexpected argument '") + positional[1] + "'");
  }

  quantserve::common::LogLevel level;
  if (!quantserve::common::ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    return UsageError("--log_level must be debug|info|warning|error, got '" +
                      absl::GetFlag(FLAGS_log_level) + "'");
  }
  quantserve::common::SetLogLevel(level);
  if (absl::GetFlag(FLAGS_model_root).empty()) {
    return UsageError("--model_root is required");
  }
  if (absl::GetFlag(FLAGS_max_new_tokens_limit) < 1 || absl::GetFlag(FLAGS_max_embed_texts) < 1 ||
      absl::GetFlag(FLAGS_max_embed_bytes) < 1 || absl::GetFlag(FLAGS_drain_timeout_seconds) < 0) {
    return UsageError(
        "--max_new_tokens_limit, --max_embed_texts and --max_embed_bytes must be >= 1 and "
        "--drain_timeout_seconds >= 0");
  }

  // Signals go to one thread, which starts the graceful shutdown; block them before any
  // other thread exists so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  server::ServerMetrics::Options metrics_options;
  metrics_options.vllm_compatible_gauges = absl::GetFlag(FLAGS_vllm_compatible_metrics);
  std::unique_ptr<server::ServerMetrics> metrics =
      *server::ServerMetrics::Create(metrics_options);  // default buckets: cannot fail
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string metrics_address = "disabled";
  if (const std::string listen = absl::GetFlag(FLAGS_metrics_listen); !listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(listen);
    } catch (const std::exception& e) {
      QS_LOG(ERROR) << "cannot serve metrics" << Kv("metrics_listen", listen)
                    << Kv("error", e.what());
      return 1;
    }
    exposer->RegisterCollectable(metrics->registry());
    std::vector<int> ports = exposer->GetListeningPorts();
    size_t colon = listen.rfind(':');
    metrics_address = (colon == std::string::npos ? listen : listen.substr(0, colon)) + ":" +
                      (ports.empty() ? std::string("?") : std::to_string(ports.front())) +
                      "/metrics";
  }

  server::BatchingOptions batching;
  batching.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  batching.max_prefill_tokens = absl::GetFlag(FLAGS_max_prefill_tokens);
  batching.max_queued = absl::GetFlag(FLAGS_max_queued_per_model);
  batching.deterministic = absl::GetFlag(FLAGS_deterministic);
  if (batching.max_batch_size < 1 || batching.max_prefill_tokens < 1 || batching.max_queued < 1) {
    return UsageError("--max_batch_size, --max_prefill_tokens and --max_queued_per_model must be >= 1");
  }
  if (const std::string kv = absl::GetFlag(FLAGS_kv_cache_memory); kv != "auto") {
    std::optional<int64_t> bytes = quantserve::common::ParseByteSize(kv);
    if (!bytes.has_value() || *bytes <= 0) {
      return UsageError("--kv_cache_memory must be 'auto' or a size like 2GiB or 512MB, got '" +
                        kv + "'");
    }
    batching.kv_cache_bytes = *bytes;
  }

  const absl::Duration drain = absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_seconds));
  server::Server::Options options;
  options.batching = batching;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.model_root = absl::GetFlag(FLAGS_model_root);
  options.allow_symlinks_outside_root = absl::GetFlag(FLAGS_allow_symlinks_outside_root);
  options.loader = quantserve::engine::LoadServableModel;
  options.metrics = metrics.get();
  options.startup_config_path = absl::GetFlag(FLAGS_config);
  options.load_threads = absl::GetFlag(FLAGS_load_threads);
  options.request_threads = absl::GetFlag(FLAGS_request_threads);
  options.num_threads = absl::GetFlag(FLAGS_num_threads);
  options.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  options.limits.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens_limit);
  options.limits.default_max_new_tokens =
      std::min(options.limits.default_max_new_tokens, options.limits.max_new_tokens);
  options.limits.max_embed_texts = absl::GetFlag(FLAGS_max_embed_texts);
  options.limits.max_embed_bytes = absl::GetFlag(FLAGS_max_embed_bytes);
  options.drain_timeout = drain;
  options.admin_token_file = absl::GetFlag(FLAGS_auth_token_file);
  options.tls = {.cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                 .key_file = absl::GetFlag(FLAGS_tls_key_file),
                 .client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file)};
  options.inference_token_file = absl::GetFlag(FLAGS_inference_token_file);
  options.health_listen_address = absl::GetFlag(FLAGS_health_listen);
  absl::StatusOr<std::unique_ptr<server::Server>> created = server::Server::Create(options);
  if (!created.ok()) {
    QS_LOG(ERROR) << "cannot start" << Kv("code", absl::StatusCodeToString(created.status().code()))
                  << Kv("error", created.status().message());
    return 1;
  }
  std::unique_ptr<server::Server>& srv = *created;
  QS_LOG(INFO) << "quantserve listening" << Kv("address", srv->address())
               << Kv("metrics", metrics_address)
               << Kv("model_root", srv->registry().options().model_root)
               << Kv("devices", quantserve::engine::DescribeDevices())
               << Kv("models", absl::StrJoin(srv->startup_models(), ","))
               << Kv("transport", server::TlsMode(options.tls))
               << Kv("health_port", srv->health_port() == 0
                                        ? std::string("none")
                                        : absl::StrCat(srv->health_port(), " (plaintext)"))
               << Kv("admin_auth", options.admin_token_file.empty() ? "open" : "token")
               << Kv("inference_auth", options.inference_token_file.empty() ? "open" : "token")
               << Kv("quant_methods",
                     absl::StrJoin(quantserve::engine::SupportedQuantMethods(), ","));

  std::atomic<bool> done{false};
  std::thread signal_thread([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    QS_LOG(INFO) << "signal received; shutting down gracefully" << Kv("signal", signal)
                 << Kv("drain_timeout_seconds", absl::ToDoubleSeconds(drain));
    std::thread shutdown([&] {
      srv->Shutdown(drain);
      done = true;
    });
    const timespec poll{.tv_sec = 0, .tv_nsec = 200'000'000};
    while (!done) {
      if (sigtimedwait(&signals, nullptr, &poll) > 0) {
        QS_LOG(WARNING) << "second signal; exiting without draining";
        std::_Exit(1);
      }
    }
    shutdown.join();
  });
  srv->Wait();
  signal_thread.join();
  return 0;
}

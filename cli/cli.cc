#include "cli/cli.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/command_line.h"
#include "cli/compare_html.h"
#include "cli/progress_bar.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "quantserve/v1/inference_service.grpc.pb.h"
#include "quantserve/v1/model_service.grpc.pb.h"

namespace quantserve::cli {
namespace {

constexpr int kOk = 0;
constexpr int kRpcError = 1;
constexpr int kUsage = 2;

constexpr char kOverview[] =
    "quantserve-cli: talk to a quantserve server.\n"
    "\n"
    "Usage: quantserve-cli [--server=HOST:PORT] [--json] <verb> [args] [flags]\n"
    "\n"
    "Verbs:\n";

constexpr char kExamples[] =
    "\nExamples:\n"
    "  quantserve-cli load tiny tiny-llama --quantization_config='{\"quant_method\":\"hqq\","
    "\"nbits\":4}'\n"
    "  quantserve-cli list\n"
    "  quantserve-cli generate tiny \"Once upon a time\" --max_new_tokens=32 --temperature=0.7\n"
    "  quantserve-cli --json embed minilm \"first text\" \"second text\"\n"
    "\n"
    "Exit codes: 0 ok, 1 RPC error (code and message on stderr), 2 usage error.\n"
    "Run `quantserve-cli <verb> --help` for a verb's flags.\n";

const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> kFlags = {
      {.name = "server",
       .value_name = "HOST:PORT",
       .help = "quantserve gRPC address",
       .default_text = "localhost:50051"},
      {.name = "json",
       .value_name = "",
       .help = "print the response messages as JSON, one per line"},
      {.name = "timeout_seconds",
       .value_name = "S",
       .help = "deadline for the call; 0 = none",
       .default_text = "0"},
      {.name = "tls_ca_file",
       .value_name = "FILE",
       .help = "speak TLS, verifying the server's certificate against this PEM CA bundle"},
      {.name = "tls_cert_file",
       .value_name = "FILE",
       .help = "client certificate (PEM) for a server with --tls_client_ca_file (mutual TLS)"},
      {.name = "tls_key_file", .value_name = "FILE", .help = "private key of --tls_cert_file"},
      {.name = "token_file",
       .value_name = "FILE",
       .help = "bearer token for a server started with --auth_token_file or "
               "--inference_token_file (the file's first token; default: $QUANTSERVE_TOKEN)"},
  };
  return kFlags;
}

// Everything a verb needs: its parsed arguments, the channel and the output streams.
struct Context {
  const CommandLine& args;
  const CliIo& io;
  std::shared_ptr<grpc::Channel> channel;
  bool json = false;
  double timeout_seconds = 0;
  std::string token;  // sent as "authorization: Bearer <token>" when not empty

  void Prepare(grpc::ClientContext& context) const {
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    if (timeout_seconds > 0) {
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::microseconds(static_cast<int64_t>(timeout_seconds * 1e6)));
    }
  }

  void PrintJson(const google::protobuf::Message& message) const {
    std::string text;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(message, &text, options).ok()) {
      text = "{}";
    }
    io.out << text << "\n" << std::flush;
  }

  // Reports a failed RPC and returns the exit code.
  int RpcError(const grpc::Status& status) const {
    io.err << "error: " << CodeName(status.error_code()) << ": " << status.error_message() << "\n";
    return kRpcError;
  }

  static std::string CodeName(grpc::StatusCode code) {
    return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  }
};

struct Verb {
  std::string name;
  std::string usage;    // positional arguments, e.g. "NAME PATH"
  std::string summary;  // one line
  size_t min_args;
  size_t max_args;  // SIZE_MAX = unlimited
  std::vector<FlagSpec> flags;
  std::function<int(const Context&)> run;
};

int UsageError(const CliIo& io, const std::string& message, const std::string& verb = "") {
  io.err << "quantserve-cli: " << message << "\nRun `quantserve-cli "
         << (verb.empty() ? "" : verb + " ") << "--help` for usage.\n";
  return kUsage;
}

// Reads "@file" arguments; anything else is the value itself.
absl::StatusOr<std::string> ValueOrFile(const std::string& flag, const std::string& value) {
  if (!absl::StartsWith(value, "@")) {
    return value;
  }
  std::ifstream in(value.substr(1), std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": cannot read '", value.substr(1), "'"));
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string StateName(v1::ModelInfo::State state) {
  std::string name = v1::ModelInfo::State_Name(state);
  return name.empty() ? "?" : name;
}

std::string Megabytes(int64_t bytes) { return absl::StrFormat("%.1f", bytes / (1024.0 * 1024.0)); }

std::string Count(int64_t n) {
  if (n >= 1'000'000'000) {
    return absl::StrFormat("%.2fB", n / 1e9);
  }
  if (n >= 1'000'000) {
    return absl::StrFormat("%.1fM", n / 1e6);
  }
  if (n >= 1'000) {
    return absl::StrFormat("%.1fK", n / 1e3);
  }
  return absl::StrCat(n);
}

// Prints rows as columns padded to their widest cell.
void PrintTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) {
        absl::StrAppend(&line, std::string(widths[i] - row[i].size() + 2, ' '));
      }
    }
    out << line << "\n";
  }
}

void PrintModel(std::ostream& out, const v1::ModelInfo& m) {
  std::vector<std::vector<std::string>> rows = {
      {"name:", m.name()},
      {"state:", StateName(m.state()) + (m.reason().empty() ? "" : " (" + m.reason() + ")")},
      {"path:", m.path()},
      {"quant_method:", m.quant_method()},
  };
  if (m.has_load_progress()) {
    rows.push_back(
        {"load_progress:",
         absl::StrFormat("%s %d/%d tensors, %.1f s", m.load_progress().phase(),
                         m.load_progress().tensors_done(), m.load_progress().tensors_total(),
                         m.load_progress().elapsed_seconds())});
  }
  if (m.architecture().empty()) {
    PrintTable(out, rows);  // not loaded (yet): nothing more to say
    return;
  }
  rows.insert(rows.end(),
              {
                  {"architecture:", m.architecture()},
                  {"task:", v1::ModelInfo::Task_Name(m.task())},
                  {"quantization_config:", m.quantization_config()},
                  {"dtype:", m.dtype()},
                  {"device:", m.device()},
                  {"memory:", absl::StrCat(Megabytes(m.memory_footprint_bytes()), " MB")},
                  {"parameters:", absl::StrCat(m.parameters(), " (", Count(m.parameters()), ")")},
                  {"load:", absl::StrFormat("%.2f s, peak %s MB", m.load_seconds(),
                                            Megabytes(m.peak_load_memory_bytes()))},
                  {"vocab_size:", absl::StrCat(m.vocab_size())},
                  {"max_position_embeddings:", absl::StrCat(m.max_position_embeddings())},
                  {"in_flight_requests:", absl::StrCat(m.in_flight_requests())},
              });
  if (!m.default_pooling().empty()) {
    rows.push_back({"default_pooling:", m.default_pooling()});
  }
  if (m.kernels_size() > 0) {
    // Sorted by name: the proto map has no order.
    std::map<std::string, int32_t> kernels(m.kernels().begin(), m.kernels().end());
    std::vector<std::string> parts;
    for (const auto& [kernel, layers] : kernels) parts.push_back(absl::StrCat(kernel, " x", layers));
    rows.push_back({"kernels:", absl::StrJoin(parts, ", ")});
  }
  if (m.max_batch_size() > 0) {
    std::string batching = absl::StrCat("max ", m.max_batch_size(), " sequences");
    if (m.kv_cache_budget_bytes() > 0) {
      absl::StrAppend(&batching, ", KV cache ", Megabytes(m.kv_cache_budget_bytes()), " MB");
    }
    if (m.deterministic()) absl::StrAppend(&batching, ", deterministic");
    rows.push_back({"batching:", batching});
  }
  PrintTable(out, rows);
}

// ---- verbs ----

int RunLoad(const Context& c) {
  v1::LoadModelRequest request;
  request.set_name(c.args.positional()[1]);
  request.set_path(c.args.positional()[2]);
  for (const char* flag : {"quantization_config", "max_memory", "device_map"}) {
    if (!c.args.Has(flag)) {
      continue;
    }
    absl::StatusOr<std::string> value = ValueOrFile(flag, c.args.GetString(flag));
    if (!value.ok()) {
      return UsageError(c.io, std::string(value.status().message()), "load");
    }
    if (std::string(flag) == "quantization_config") {
      request.set_quantization_config(*value);
    } else if (std::string(flag) == "max_memory") {
      request.set_max_memory(*value);
    } else {
      request.set_device_map(*value);
    }
  }
  if (c.args.Has("calibration_texts")) {
    const std::string raw = c.args.GetString("calibration_texts");
    absl::StatusOr<std::string> value = ValueOrFile("calibration_texts", raw);
    if (!value.ok()) {
      return UsageError(c.io, std::string(value.status().message()), "load");
    }
    if (absl::StartsWith(raw, "@")) {  // one text per non-empty line
      for (absl::string_view line : absl::StrSplit(*value, '\n', absl::SkipWhitespace())) {
        request.add_calibration_texts(std::string(line));
      }
    } else {
      request.add_calibration_texts(*value);
    }
  }
  request.set_dtype(c.args.GetString("dtype"));
  request.set_kernel_activations(c.args.GetString("kernel_activations"));
  absl::StatusOr<std::optional<int64_t>> threads = c.args.GetInt("num_threads");
  if (!threads.ok()) {
    return UsageError(c.io, std::string(threads.status().message()), "load");
  }
  request.set_num_threads(static_cast<int32_t>(threads->value_or(0)));

  auto stub = v1::ModelService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  auto reader = stub->LoadModel(&context, request);
  ProgressBar bar(c.io.err, c.io.interactive);
  v1::LoadModelProgress progress;
  std::optional<v1::ModelInfo> model;
  while (reader->Read(&progress)) {
    if (c.json) {
      c.PrintJson(progress);
    } else {
      bar.Update(progress.phase(), progress.tensors_done(), progress.tensors_total(),
                 progress.bytes_done(), progress.bytes_total(), progress.elapsed_seconds());
    }
    if (progress.has_model()) {
      model = progress.model();
    }
  }
  bar.Finish();
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (!c.json && model.has_value()) {
    c.io.out << absl::StrFormat("loaded %s: %s %s %s on %s, %s MB, %s params, %.2f s\n",
                                model->name(), model->architecture(), model->quant_method(),
                                model->dtype(), model->device(),
                                Megabytes(model->memory_footprint_bytes()),
                                Count(model->parameters()), model->load_seconds());
  }
  return kOk;
}

int RunUnload(const Context& c) {
  v1::UnloadModelRequest request;
  request.set_name(c.args.positional()[1]);
  absl::StatusOr<std::optional<double>> drain = c.args.GetDouble("drain_timeout_seconds");
  if (!drain.ok()) {
    return UsageError(c.io, std::string(drain.status().message()), "unload");
  }
  request.set_drain_timeout_seconds(drain->value_or(0));
  auto stub = v1::ModelService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  v1::UnloadModelResponse response;
  grpc::Status status = stub->UnloadModel(&context, request, &response);
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (c.json) {
    c.PrintJson(response);
  } else {
    c.io.out << absl::StrFormat("unloaded %s (was %s, %.2f s)\n", response.name(),
                                StateName(response.previous_state()), response.seconds());
  }
  return kOk;
}

int RunSave(const Context& c) {
  v1::SaveModelRequest request;
  request.set_name(c.args.positional()[1]);
  request.set_path(c.args.positional()[2]);
  request.set_max_shard_size(c.args.GetString("max_shard_size"));
  auto stub = v1::ModelService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  v1::SaveModelResponse response;
  grpc::Status status = stub->SaveModel(&context, request, &response);
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (c.json) {
    c.PrintJson(response);
  } else {
    c.io.out << absl::StrFormat("saved %s to %s: %d files, %s MB, %.2f s\n", request.name(),
                                response.path(), response.files_size(),
                                Megabytes(response.bytes_written()), response.seconds());
  }
  return kOk;
}

// grpc.health.v1 Check: "" = the server, a model name = that model. Needs no token, so it
// serves as a container health check and a probe behind TLS.
int RunHealth(const Context& c) {
  auto stub = grpc::health::v1::Health::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  grpc::health::v1::HealthCheckRequest request;
  if (c.args.positional().size() > 1) request.set_service(c.args.positional()[1]);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (c.json) {
    c.PrintJson(response);
  } else {
    c.io.out << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
             << "\n";
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kOk : kRpcError;
}

int RunList(const Context& c) {
  auto stub = v1::ModelService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  v1::ListModelsResponse response;
  grpc::Status status = stub->ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (c.json) {
    c.PrintJson(response);
    return kOk;
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "STATE", "ARCH", "QUANT_METHOD", "DTYPE",
                                                 "DEVICE", "MEMORY_MB", "PARAMS", "LOAD_S"}};
  for (const v1::ModelInfo& m : response.models()) {
    const bool loaded = !m.architecture().empty();
    auto cell = [](const std::string& text) { return text.empty() ? std::string("-") : text; };
    rows.push_back(
        {m.name(), StateName(m.state()), cell(m.architecture()), cell(m.quant_method()),
         cell(m.dtype()), cell(m.device()), loaded ? Megabytes(m.memory_footprint_bytes()) : "-",
         loaded ? Count(m.parameters()) : "-", absl::StrFormat("%.2f", m.load_seconds())});
  }
  PrintTable(c.io.out, rows);
  for (const v1::ModelInfo& m : response.models()) {
    if (m.state() == v1::ModelInfo::FAILED) {
      c.io.err << m.name() << ": " << m.reason() << "\n";
    }
  }
  return kOk;
}

// "variant" cells of a route: model=weight, with "(down)" where the model is not READY.
std::string VariantCell(const std::string& model, uint32_t weight, bool available) {
  return absl::StrCat(model, "=", weight, available ? "" : " (down)");
}

void PrintRoutes(const Context& c, const std::vector<v1::Route>& routes) {
  std::vector<std::vector<std::string>> rows = {{"ROUTE", "VARIANTS", "MIRROR"}};
  for (const v1::Route& r : routes) {
    std::vector<std::string> variants;
    for (const v1::RouteVariant& v : r.variants()) {
      variants.push_back(VariantCell(v.model(), v.weight(), v.available()));
    }
    const std::string mirror =
        r.mirror_model().empty()
            ? "-"
            : absl::StrCat(r.mirror_model(), " ", r.mirror_percent(), "%",
                           r.mirror_available() ? "" : " (down)");
    rows.push_back({r.name(), absl::StrJoin(variants, ", "), mirror});
  }
  PrintTable(c.io.out, rows);
}

int RunRoutes(const Context& c) {
  auto stub = v1::ModelService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  v1::ListRoutesResponse response;
  grpc::Status status = stub->ListRoutes(&context, v1::ListRoutesRequest(), &response);
  if (!status.ok()) return c.RpcError(status);
  if (c.json) {
    c.PrintJson(response);
    return kOk;
  }
  PrintRoutes(c, {response.routes().begin(), response.routes().end()});
  return kOk;
}

// route set NAME MODEL=WEIGHT... | route delete NAME
int RunRoute(const Context& c) {
  const std::vector<std::string>& args = c.args.positional();
  auto stub = v1::ModelService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  if (args[1] == "delete") {
    if (args.size() != 3) return UsageError(c.io, "route delete takes one NAME", "route");
    v1::DeleteRouteRequest request;
    request.set_name(args[2]);
    v1::DeleteRouteResponse response;
    grpc::Status status = stub->DeleteRoute(&context, request, &response);
    if (!status.ok()) return c.RpcError(status);
    if (!c.json) c.io.out << "deleted route " << args[2] << "\n";
    return kOk;
  }
  if (args[1] != "set") {
    return UsageError(c.io, absl::StrCat("unknown route command '", args[1], "' (set|delete)"),
                      "route");
  }
  if (args.size() < 4) {
    return UsageError(c.io, "route set takes NAME and at least one MODEL=WEIGHT", "route");
  }
  v1::SetRouteRequest request;
  v1::Route* route = request.mutable_route();
  route->set_name(args[2]);
  for (size_t i = 3; i < args.size(); ++i) {
    const size_t eq = args[i].rfind('=');
    uint32_t weight = 1;
    if (eq != std::string::npos && !absl::SimpleAtoi(args[i].substr(eq + 1), &weight)) {
      return UsageError(c.io, absl::StrCat("'", args[i], "': WEIGHT must be a non-negative integer"),
                        "route");
    }
    v1::RouteVariant* v = route->add_variants();
    v->set_model(args[i].substr(0, eq));
    v->set_weight(weight);
  }
  route->set_mirror_model(c.args.GetString("mirror"));
  absl::StatusOr<std::optional<int64_t>> percent = c.args.GetInt("mirror_percent");
  if (!percent.ok() || percent->value_or(0) < 0 || percent->value_or(0) > 100) {
    return UsageError(c.io, "--mirror_percent must be an integer in [0, 100]", "route");
  }
  route->set_mirror_percent(static_cast<uint32_t>(
      percent->value_or(route->mirror_model().empty() ? 0 : 100)));
  v1::Route response;
  grpc::Status status = stub->SetRoute(&context, request, &response);
  if (!status.ok()) return c.RpcError(status);
  if (c.json) {
    c.PrintJson(response);
  } else {
    PrintRoutes(c, {response});
  }
  return kOk;
}

// compare BASE CAND...: the report as a table (quality, then speed and memory).
int RunCompare(const Context& c) {
  const std::vector<std::string>& args = c.args.positional();
  v1::CompareRequest request;
  request.set_baseline(args[1]);
  for (size_t i = 2; i < args.size(); ++i) request.add_candidates(args[i]);
  if (c.args.Has("text")) {
    absl::StatusOr<std::string> text = ValueOrFile("text", c.args.GetString("text"));
    if (!text.ok()) return UsageError(c.io, std::string(text.status().message()), "compare");
    request.add_texts(*text);
  }
  for (const char* flag : {"max_tokens", "continuation_tokens"}) {
    absl::StatusOr<std::optional<int64_t>> v = c.args.GetInt(flag);
    if (!v.ok()) return UsageError(c.io, std::string(v.status().message()), "compare");
    if (!v->has_value()) continue;
    if (std::string(flag) == "max_tokens") request.set_max_tokens(static_cast<int32_t>(**v));
    else request.set_continuation_tokens(static_cast<int32_t>(**v));
  }
  auto stub = v1::InferenceService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  auto reader = stub->Compare(&context, request);
  v1::CompareProgress progress;
  std::optional<v1::CompareReport> report;
  while (reader->Read(&progress)) {
    if (progress.has_report()) {
      report = progress.report();
    } else {
      c.io.err << "compare: " << progress.phase() << " " << progress.variant() << " ("
               << progress.done() << "/" << progress.total() << ")\n";
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return c.RpcError(status);
  if (!report.has_value()) return c.RpcError(grpc::Status(grpc::StatusCode::INTERNAL, "no report"));
  if (c.args.Has("html")) {
    const std::string path = c.args.GetString("html");
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << CompareReportHtml(*report);
    out.close();
    if (!out) {
      c.io.err << "error: cannot write " << path << "\n";
      return kUsage;
    }
    c.io.err << "compare: wrote " << path << "\n";
  }
  if (c.json) {
    c.PrintJson(*report);
    return kOk;
  }
  c.io.out << absl::StrFormat("baseline %s, %d tokens scored over %d texts (load average %.2f)\n",
                              report->baseline(), report->tokens(), report->texts(),
                              report->load_average());
  std::vector<std::vector<std::string>> rows = {
      {"VARIANT", "QUANT", "PPL", "PPL_RATIO", "KL_MEAN", "KL_P99", "KL_MAX", "TOP1_%", "DP_RMS",
       "GREEDY", "MEMORY_MB", "PREFILL_TOK/S", "DECODE_TOK/S", "DECODE_X"}};
  for (const v1::CompareVariant& v : report->variants()) {
    rows.push_back(
        {v.model(), v.quant_method(), absl::StrFormat("%.4f", v.perplexity()),
         absl::StrFormat("%.4f±%.4f", v.ppl_ratio(), v.ppl_ratio_err()),
         absl::StrFormat("%.5f±%.5f", v.kl_mean(), v.kl_err()), absl::StrFormat("%.4f", v.kl_p99()),
         absl::StrFormat("%.4f", v.kl_max()), absl::StrFormat("%.2f", 100 * v.same_top1()),
         absl::StrFormat("%.4f", v.dp_rms()),
         absl::StrFormat("%d/%d", v.greedy_agreement_tokens(), v.continuation_tokens()),
         Megabytes(v.memory_footprint_bytes()),
         absl::StrFormat("%.1f", v.prefill_tokens_per_second()),
         absl::StrFormat("%.2f", v.decode_tokens_per_second()),
         absl::StrFormat("%.2fx", v.decode_ratio())});
  }
  PrintTable(c.io.out, rows);
  return kOk;
}

int RunGet(const Context& c) {
  auto stub = v1::ModelService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  v1::GetModelRequest request;
  request.set_name(c.args.positional()[1]);
  v1::ModelInfo info;
  grpc::Status status = stub->GetModel(&context, request, &info);
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (c.json) {
    c.PrintJson(info);
  } else {
    PrintModel(c.io.out, info);
  }
  return kOk;
}

int RunGenerate(const Context& c) {
  v1::GenerateRequest request;
  request.set_model(c.args.positional()[1]);
  request.set_prompt(c.args.positional()[2]);
  v1::SamplingParams* sampling = request.mutable_sampling();
  for (const char* flag : {"max_new_tokens", "top_k", "seed", "logprobs"}) {
    absl::StatusOr<std::optional<int64_t>> value = c.args.GetInt(flag);
    if (!value.ok()) {
      return UsageError(c.io, std::string(value.status().message()), "generate");
    }
    if (!value->has_value()) {
      continue;
    }
    const int64_t v = **value;
    const std::string name = flag;
    if (name == "max_new_tokens") {
      request.set_max_new_tokens(static_cast<int32_t>(v));
    } else if (name == "top_k") {
      sampling->set_top_k(static_cast<int32_t>(v));
    } else if (name == "seed") {
      sampling->set_seed(static_cast<uint64_t>(v));
    } else {
      request.set_logprobs(static_cast<int32_t>(v));
    }
  }
  for (const char* flag : {"temperature", "top_p", "repetition_penalty"}) {
    absl::StatusOr<std::optional<double>> value = c.args.GetDouble(flag);
    if (!value.ok()) {
      return UsageError(c.io, std::string(value.status().message()), "generate");
    }
    if (!value->has_value()) {
      continue;
    }
    const float v = static_cast<float>(**value);
    const std::string name = flag;
    if (name == "temperature") {
      sampling->set_temperature(v);
    } else if (name == "top_p") {
      sampling->set_top_p(v);
    } else {
      sampling->set_repetition_penalty(v);
    }
  }
  for (const std::string& stop : c.args.GetAll("stop")) {
    request.add_stop(stop);
  }
  request.set_ignore_eos(c.args.GetBool("ignore_eos"));
  request.set_routing_key(c.args.GetString("routing_key"));

  auto stub = v1::InferenceService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse response;
  std::optional<v1::GenerateFinish> finish;
  std::vector<std::string> logprobs;
  bool printed_text = false;
  while (reader->Read(&response)) {
    if (c.json) {
      c.PrintJson(response);
    } else {
      c.io.out << response.text() << std::flush;
      printed_text = printed_text || !response.text().empty();
      for (int i = 0; i < response.logprobs_size() && i < response.token_ids_size(); ++i) {
        logprobs.push_back(absl::StrFormat("%d:%.3f", response.token_ids(i), response.logprobs(i)));
      }
    }
    if (response.has_finish()) {
      finish = response.finish();
    }
  }
  grpc::Status status = reader->Finish();
  if (!c.json && printed_text) {
    c.io.out << "\n" << std::flush;
  }
  if (!c.json && finish.has_value()) {
    if (!logprobs.empty()) {
      c.io.err << "[logprobs " << absl::StrJoin(logprobs, " ") << "]\n";
    }
    const double decode_seconds = finish->seconds() - finish->time_to_first_token_seconds();
    const double tokens_per_second = finish->completion_tokens() > 1 && decode_seconds > 0
                                         ? (finish->completion_tokens() - 1) / decode_seconds
                                         : 0;
    std::string reason = GenerateFinish_Reason_Name(finish->reason());
    for (char& ch : reason) {
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    c.io.err << absl::StrFormat(
        "[finish=%s prompt_tokens=%d completion_tokens=%d ttft=%.3fs total=%.3fs "
        "decode=%.1f tok/s served_by=%s]\n",
        reason, finish->prompt_tokens(), finish->completion_tokens(),
        finish->time_to_first_token_seconds(), finish->seconds(), tokens_per_second,
        finish->served_by());
  }
  if (!status.ok()) {
    return c.RpcError(status);
  }
  return kOk;
}

int RunEmbed(const Context& c) {
  v1::EmbedRequest request;
  request.set_model(c.args.positional()[1]);
  for (size_t i = 2; i < c.args.positional().size(); ++i) {
    request.add_texts(c.args.positional()[i]);
  }
  request.set_pooling(c.args.GetString("pooling"));
  if (c.args.Has("normalize")) {
    request.set_normalize(c.args.GetBool("normalize"));
  }
  auto stub = v1::InferenceService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  v1::EmbedResponse response;
  grpc::Status status = stub->Embed(&context, request, &response);
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (c.json) {
    c.PrintJson(response);
    return kOk;
  }
  for (int i = 0; i < response.embeddings_size(); ++i) {
    const auto& values = response.embeddings(i).values();
    double norm = 0;
    for (float v : values) {
      norm += static_cast<double>(v) * v;
    }
    std::vector<std::string> head;
    for (int j = 0; j < values.size() && j < 8; ++j) {
      head.push_back(absl::StrFormat("%.4f", values[j]));
    }
    c.io.out << absl::StrFormat("[%d] dim=%d norm=%.4f  %s%s\n", i, values.size(), std::sqrt(norm),
                                absl::StrJoin(head, " "), values.size() > 8 ? " ..." : "");
  }
  c.io.err << absl::StrFormat("[served_by=%s prompt_tokens=%d]\n", response.served_by(),
                              response.prompt_tokens());
  return kOk;
}

int RunScore(const Context& c) {
  v1::ScoreRequest request;
  request.set_model(c.args.positional()[1]);
  request.set_text(c.args.positional()[2]);
  auto stub = v1::InferenceService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  v1::ScoreResponse response;
  grpc::Status status = stub->Score(&context, request, &response);
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (c.json) {
    c.PrintJson(response);
    return kOk;
  }
  double sum = 0;
  for (float lp : response.logprobs()) {
    sum += lp;
  }
  const int n = response.logprobs_size();
  c.io.out << absl::StrFormat("perplexity=%.4f tokens=%d mean_logprob=%.4f\n",
                              response.perplexity(), response.token_ids_size(),
                              n > 0 ? sum / n : 0.0);
  std::vector<std::vector<std::string>> rows = {{"POS", "TOKEN_ID", "LOGPROB"}};
  for (int i = 0; i < n; ++i) {
    rows.push_back({absl::StrCat(i + 1), absl::StrCat(response.token_ids(i + 1)),
                    absl::StrFormat("%.4f", response.logprobs(i))});
  }
  PrintTable(c.io.out, rows);
  return kOk;
}

int RunTokenize(const Context& c) {
  v1::TokenizeRequest request;
  request.set_model(c.args.positional()[1]);
  request.set_text(c.args.positional()[2]);
  if (c.args.Has("add_special_tokens")) {
    request.set_add_special_tokens(c.args.GetBool("add_special_tokens"));
  }
  auto stub = v1::InferenceService::NewStub(c.channel);
  grpc::ClientContext context;
  c.Prepare(context);
  v1::TokenizeResponse response;
  grpc::Status status = stub->Tokenize(&context, request, &response);
  if (!status.ok()) {
    return c.RpcError(status);
  }
  if (c.json) {
    c.PrintJson(response);
    return kOk;
  }
  c.io.out << response.token_ids_size() << " tokens\n";
  std::vector<std::vector<std::string>> rows = {{"ID", "TOKEN"}};
  for (int i = 0; i < response.token_ids_size(); ++i) {
    rows.push_back(
        {absl::StrCat(response.token_ids(i)),
         i < response.tokens_size() ? absl::StrCat("\"", response.tokens(i), "\"") : ""});
  }
  PrintTable(c.io.out, rows);
  return kOk;
}

const std::vector<Verb>& Verbs() {
  static const std::vector<Verb> kVerbs = {
      {"load",
       "NAME PATH",
       "load a model (PATH inside the server's --model_root) with progress",
       3,
       3,
       {{.name = "quantization_config",
         .value_name = "JSON|@FILE",
         .help = "HF quantization_config, e.g. '{\"quant_method\":\"bitsandbytes\","
                 "\"load_in_4bit\":true}'; empty = the checkpoint's or none"},
        {.name = "dtype",
         .value_name = "DTYPE",
         .help = "auto|float32|bfloat16|float16",
         .default_text = "auto"},
        {.name = "device_map",
         .value_name = "MAP|@FILE",
         .help = "auto|cpu|cuda|cuda:N or a JSON object",
         .default_text = "cpu"},
        {.name = "max_memory",
         .value_name = "JSON|@FILE",
         .help = "per-device limits, e.g. '{\"cpu\":\"8GiB\"}'"},
        {.name = "calibration_texts",
         .value_name = "TEXT|@FILE",
         .help = "sample text for activation calibration (quanto `activations`); @FILE gives "
                 "one text per line"},
        {.name = "num_threads",
         .value_name = "N",
         .help = "intra-op threads for this model; 0 = the server default"},
        {.name = "kernel_activations",
         .value_name = "BITS",
         .help = "int16|int8: precision of the CPU 4-bit kernels' inputs; int8 decodes faster "
                 "(AVX-512 VNNI) at some accuracy (measure it with compare)",
         .default_text = "int16"}},
       RunLoad},
      {"unload",
       "NAME",
       "drain and unload a model",
       2,
       2,
       {{.name = "drain_timeout_seconds",
         .value_name = "S",
         .help = "wait this long for in-flight requests before cancelling them; 0 = server "
                 "default"}},
       RunUnload},
      {"save",
       "NAME PATH",
       "write a loaded model as an HF directory (PATH: new, inside --model_root) in its "
       "method's serialized layout, so the next load skips quantizing",
       3,
       3,
       {{.name = "max_shard_size",
         .value_name = "SIZE",
         .help = "largest safetensors shard, e.g. 5GB or 500MiB",
         .default_text = "50GB"}},
       RunSave},
      {"list", "", "list every model with its state, quantization and memory", 1, 1, {}, RunList},
      {"health",
       "[MODEL]",
       "grpc.health.v1 status of the server or of one model (exit 0 only when SERVING; needs "
       "no token)",
       1,
       2,
       {},
       RunHealth},
      {"get", "NAME", "show one model in detail", 2, 2, {}, RunGet},
      {"compare",
       "BASELINE CANDIDATE...",
       "score variants of one model on the same tokens: KL divergence, perplexity ratio, top-1 "
       "and greedy agreement against the baseline, and each one's speed and memory",
       3,
       SIZE_MAX,
       {{.name = "text",
         .value_name = "TEXT|@FILE",
         .help = "text to score; default: the baseline directory's heldout.txt"},
        {.name = "max_tokens", .value_name = "N", .help = "tokens scored per text (first ones)",
         .default_text = "512"},
        {.name = "continuation_tokens",
         .value_name = "N",
         .help = "greedy continuation compared with the baseline's",
         .default_text = "32"},
        {.name = "html",
         .value_name = "FILE",
         .help = "also write the report as a self-contained HTML page (table, per-token KL "
                 "distribution, quality against speed)"}},
       RunCompare},
      {"routes", "", "list the A/B routes with their variants' weights and availability", 1, 1,
       {}, RunRoutes},
      {"route",
       "set NAME MODEL[=WEIGHT]... | delete NAME",
       "create or replace a route splitting traffic between model variants (weight 1 when "
       "omitted), or delete one; clients then name the route in place of a model",
       3,
       SIZE_MAX,
       {{.name = "mirror",
         .value_name = "MODEL",
         .help = "(set) also run a share of the requests on MODEL, output discarded"},
        {.name = "mirror_percent",
         .value_name = "P",
         .help = "(set) share of requests mirrored, 0..100; 100 when --mirror is given alone"}},
       RunRoute},
      {"generate",
       "MODEL PROMPT",
       "generate text, printed as it streams (summary on stderr)",
       3,
       3,
       {{.name = "max_new_tokens",
         .value_name = "N",
         .help = "most tokens to generate",
         .default_text = "64"},
        {.name = "temperature",
         .value_name = "T",
         .help = "sampling temperature; 0 = greedy",
         .default_text = "0"},
        {.name = "top_k", .value_name = "K", .help = "keep the K most likely tokens; 0 = off"},
        {.name = "top_p", .value_name = "P", .help = "nucleus sampling mass in (0, 1]"},
        {.name = "repetition_penalty",
         .value_name = "R",
         .help = "> 1 discourages repeated tokens"},
        {.name = "seed", .value_name = "N", .help = "random seed for reproducible sampling"},
        {.name = "stop", .value_name = "TEXT", .help = "stop string", .repeatable = true},
        {.name = "logprobs",
         .value_name = "K",
         .help = "1 = chosen-token logprobs, K > 1 also top-K alternatives"},
        {.name = "ignore_eos",
         .value_name = "",
         .help = "keep going past the end-of-sequence token"},
        {.name = "routing_key", .value_name = "KEY", .help = "sticky routing key for A/B routes"}},
       RunGenerate},
      {"embed",
       "MODEL TEXT...",
       "embed one or more texts",
       3,
       SIZE_MAX,
       {{.name = "pooling",
         .value_name = "mean|cls|last",
         .help = "pooling; empty = model default"},
        {.name = "normalize",
         .value_name = "",
         .help = "L2-normalize (use --normalize=false to turn off)",
         .default_text = "true"}},
       RunEmbed},
      {"score", "MODEL TEXT", "per-token logprobs and perplexity of a text", 3, 3, {}, RunScore},
      {"tokenize",
       "MODEL TEXT",
       "show a text's tokens",
       3,
       3,
       {{.name = "add_special_tokens",
         .value_name = "",
         .help = "add BOS/CLS etc. (--add_special_tokens=false "
                 "to turn off)",
         .default_text = "true"}},
       RunTokenize},
  };
  return kVerbs;
}

const Verb* FindVerb(const std::string& name) {
  for (const Verb& verb : Verbs()) {
    if (verb.name == name) {
      return &verb;
    }
  }
  return nullptr;
}

void PrintOverview(std::ostream& out) {
  out << kOverview;
  std::vector<std::vector<std::string>> rows;
  for (const Verb& verb : Verbs()) {
    rows.push_back({"  " + verb.name + (verb.usage.empty() ? "" : " " + verb.usage), verb.summary});
  }
  PrintTable(out, rows);
  out << "\nGlobal flags:\n" << FlagsHelp(GlobalFlags()) << kExamples;
}

void PrintVerbHelp(std::ostream& out, const Verb& verb) {
  out << "Usage: quantserve-cli [global flags] " << verb.name
      << (verb.usage.empty() ? "" : " " + verb.usage) << (verb.flags.empty() ? "" : " [flags]")
      << "\n\n"
      << verb.summary << "\n";
  if (!verb.flags.empty()) {
    out << "\nFlags:\n" << FlagsHelp(verb.flags);
  }
  out << "\nGlobal flags:\n" << FlagsHelp(GlobalFlags());
}

}  // namespace

int RunCli(const std::vector<std::string>& args, const CliIo& io) {
  // Parse against every known flag, then check the ones given belong to the verb.
  std::vector<FlagSpec> all = GlobalFlags();
  std::set<std::string> seen;
  for (const FlagSpec& f : all) {
    seen.insert(f.name);
  }
  for (const Verb& verb : Verbs()) {
    for (const FlagSpec& f : verb.flags) {
      if (seen.insert(f.name).second) {
        all.push_back(f);
      }
    }
  }
  absl::StatusOr<CommandLine> parsed = CommandLine::Parse(args, all);
  if (!parsed.ok()) {
    return UsageError(io, std::string(parsed.status().message()));
  }
  const std::vector<std::string>& positional = parsed->positional();
  std::string verb_name = positional.empty() ? "" : positional[0];
  if (verb_name == "help") {
    if (positional.size() > 1 && FindVerb(positional[1]) != nullptr) {
      PrintVerbHelp(io.out, *FindVerb(positional[1]));
    } else {
      PrintOverview(io.out);
    }
    return kOk;
  }
  if (verb_name.empty()) {
    if (parsed->help()) {
      PrintOverview(io.out);
      return kOk;
    }
    PrintOverview(io.err);
    return kUsage;
  }
  const Verb* verb = FindVerb(verb_name);
  if (verb == nullptr) {
    return UsageError(io, absl::StrCat("unknown verb '", verb_name, "'"));
  }
  if (parsed->help()) {
    PrintVerbHelp(io.out, *verb);
    return kOk;
  }
  std::set<std::string> allowed;
  for (const FlagSpec& f : GlobalFlags()) {
    allowed.insert(f.name);
  }
  for (const FlagSpec& f : verb->flags) {
    allowed.insert(f.name);
  }
  for (const FlagSpec& f : all) {
    if (parsed->Has(f.name) && !allowed.contains(f.name)) {
      return UsageError(io, absl::StrCat("--", f.name, " does not apply to '", verb->name, "'"),
                        verb->name);
    }
  }
  if (positional.size() < verb->min_args || positional.size() > verb->max_args) {
    return UsageError(io,
                      absl::StrCat("usage: quantserve-cli ", verb->name,
                                   verb->usage.empty() ? "" : " ", verb->usage),
                      verb->name);
  }
  absl::StatusOr<std::optional<double>> timeout = parsed->GetDouble("timeout_seconds");
  if (!timeout.ok()) {
    return UsageError(io, std::string(timeout.status().message()));
  }
  std::string token;
  if (parsed->Has("token_file")) {
    const std::string path = parsed->GetString("token_file");
    std::ifstream in(path);
    std::string line;
    while (in && std::getline(in, line)) {
      const absl::string_view t = absl::StripAsciiWhitespace(line);
      if (!t.empty() && t[0] != '#') {
        token = std::string(t);
        break;
      }
    }
    if (token.empty()) {
      return UsageError(io, absl::StrCat("--token_file: no token in '", path, "'"));
    }
  } else if (const char* env = std::getenv("QUANTSERVE_TOKEN"); env != nullptr) {
    token = std::string(absl::StripAsciiWhitespace(env));
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (parsed->Has("tls_ca_file") || parsed->Has("tls_cert_file") || parsed->Has("tls_key_file")) {
    if (parsed->Has("tls_cert_file") != parsed->Has("tls_key_file")) {
      return UsageError(io, "--tls_cert_file and --tls_key_file go together");
    }
    grpc::SslCredentialsOptions ssl;
    for (auto [flag, target] : {std::pair{"tls_ca_file", &ssl.pem_root_certs},
                                std::pair{"tls_cert_file", &ssl.pem_cert_chain},
                                std::pair{"tls_key_file", &ssl.pem_private_key}}) {
      if (!parsed->Has(flag)) continue;
      std::ifstream in(parsed->GetString(flag), std::ios::binary);
      std::ostringstream text;
      text << in.rdbuf();
      if (!in.is_open() || text.str().empty()) {
        return UsageError(io, absl::StrCat("--", flag, ": cannot read '",
                                           parsed->GetString(flag), "'"));
      }
      *target = text.str();
    }
    credentials = grpc::SslCredentials(ssl);
  }
  Context context{
      .args = *parsed,
      .io = io,
      .channel = grpc::CreateChannel(parsed->GetString("server", "localhost:50051"),
                                     credentials),
      .json = parsed->GetBool("json"),
      .timeout_seconds = timeout->value_or(0),
      .token = std::move(token),
  };
  return verb->run(context);
}

}  // namespace quantserve::cli

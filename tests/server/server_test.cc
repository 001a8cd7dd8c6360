// End to end: a real Server on 127.0.0.1:0 with fake models, driven over real gRPC channels.

#include "server/server.h"

#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "quantserve/v1/inference_service.grpc.pb.h"
#include "quantserve/v1/model_service.grpc.pb.h"
#include "tests/server/fake_model.h"
#include "tests/testing/test_pki.h"

namespace quantserve::server {
namespace {

namespace fs = std::filesystem;
using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using testing::FakeStats;
using ::testing::HasSubstr;
using testing::MakeFakeLoader;
using ::testing::StartsWith;

constexpr int kMaxRequestBytes = 256 << 10;

// The process's resident set, from /proc/self/statm, after handing free heap pages back
// (so it counts live memory, not the allocator's free lists).
int64_t ResidentBytes() {
  ::malloc_trim(0);
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ =
        fs::path(::testing::TempDir()) /
        ("server_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    for (const char* dir : {"tiny", "tiny2", "broken", "slow", "embed"}) {
      fs::create_directories(root_ / dir);
    }
    std::ofstream(root_ / "notes.txt") << "not a model";
    stats_ = std::make_shared<FakeStats>();
    ServerMetrics::Options metrics_options;
    metrics_options.vllm_compatible_gauges = true;
    metrics_ = *ServerMetrics::Create(metrics_options);
    ASSERT_TRUE(StartServer().ok());
  }

  void TearDown() override {
    stats_->Unblock();
    stats_->ReleaseLoads();
    if (server_ != nullptr) {
      server_->Shutdown(absl::Seconds(2));
      server_.reset();
    }
    fs::remove_all(root_);
  }

  absl::Status StartServer(const std::string& config_path = "") {
    Server::Options options;
    options.listen_address = "127.0.0.1:0";
    options.model_root = root_.string();
    options.loader = MakeFakeLoader(stats_);
    options.metrics = metrics_.get();
    options.startup_config_path = config_path;
    options.request_threads = 2;
    options.max_request_bytes = kMaxRequestBytes;
    options.limits.max_new_tokens = 100;
    options.limits.max_embed_texts = 4;
    options.limits.max_embed_bytes = 1024;
    options.drain_timeout = absl::Seconds(5);
    options.stats_interval = absl::Milliseconds(20);
    options.admin_token_file = admin_token_file_;
    options.tls = tls_;
    options.health_listen_address = health_listen_;
    options.inference_token_file = inference_token_file_;
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(options);
    if (!server.ok()) {
      return server.status();
    }
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    models_ = v1::ModelService::NewStub(channel_);
    inference_ = v1::InferenceService::NewStub(channel_);
    health_ = Health::NewStub(channel_);
    return absl::OkStatus();
  }

  grpc::Status Load(const std::string& name, const std::string& path,
                    std::vector<v1::LoadModelProgress>* messages = nullptr,
                    const std::string& quantization_config = "") {
    v1::LoadModelRequest request;
    request.set_name(name);
    request.set_path(path);
    request.set_quantization_config(quantization_config);
    grpc::ClientContext context;
    auto reader = models_->LoadModel(&context, request);
    v1::LoadModelProgress progress;
    while (reader->Read(&progress)) {
      if (messages != nullptr) {
        messages->push_back(progress);
      }
    }
    return reader->Finish();
  }

  grpc::Status Generate(const v1::GenerateRequest& request,
                        std::vector<v1::GenerateResponse>* responses = nullptr,
                        absl::Duration timeout = absl::Seconds(10)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    auto reader = inference_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (responses != nullptr) {
        responses->push_back(response);
      }
    }
    return reader->Finish();
  }

  static v1::GenerateRequest GenerateRequest(const std::string& model, const std::string& prompt,
                                             int max_new_tokens = 4) {
    v1::GenerateRequest request;
    request.set_model(model);
    request.set_prompt(prompt);
    request.set_max_new_tokens(max_new_tokens);
    return request;
  }

  grpc::Status Unload(const std::string& name, double drain_timeout_seconds = 0) {
    v1::UnloadModelRequest request;
    request.set_name(name);
    request.set_drain_timeout_seconds(drain_timeout_seconds);
    v1::UnloadModelResponse response;
    grpc::ClientContext context;
    return models_->UnloadModel(&context, request, &response);
  }

  absl::StatusOr<v1::ModelInfo> Get(const std::string& name) {
    v1::GetModelRequest request;
    request.set_name(name);
    v1::ModelInfo info;
    grpc::ClientContext context;
    grpc::Status status = models_->GetModel(&context, request, &info);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return info;
  }

  // Polls GetModel until `name` reaches `state`.
  bool WaitForState(const std::string& name, v1::ModelInfo::State state) {
    for (int i = 0; i < 1000; ++i) {
      absl::StatusOr<v1::ModelInfo> info = Get(name);
      if (info.ok() && info->state() == state) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }

  // A test CA with server and client certificates in root_/pki (tests/testing/test_pki.h);
  // returns the directory. Fails the test when openssl does.
  std::string MakePki(quantserve::testing::TestPki* pki) {
    const fs::path dir = root_ / "pki";
    fs::create_directories(dir);
    EXPECT_TRUE(quantserve::testing::MakeTestPki(dir.string(), pki))
        << "openssl failed; see " << dir.string() << "/openssl.log";
    return dir.string();
  }

  HealthCheckResponse::ServingStatus HealthOf(const std::string& service,
                                              grpc::StatusCode* code = nullptr) {
    HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    grpc::ClientContext context;
    grpc::Status status = health_->Check(&context, request, &response);
    if (code != nullptr) {
      *code = status.error_code();
    }
    return response.status();
  }

  std::string Scrape() {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, metrics_->registry()->Collect());
    return out.str();
  }

  fs::path root_;
  std::shared_ptr<FakeStats> stats_;
  std::unique_ptr<ServerMetrics> metrics_;
  TlsOptions tls_;
  std::string health_listen_;
  std::string admin_token_file_;
  std::string inference_token_file_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ModelService::Stub> models_;
  std::unique_ptr<v1::InferenceService::Stub> inference_;
  std::unique_ptr<Health::Stub> health_;
};

TEST_F(ServerTest, BindsAnEphemeralPort) {
  EXPECT_GT(server_->port(), 0);
  EXPECT_EQ(server_->address(), "127.0.0.1:" + std::to_string(server_->port()));
}

TEST_F(ServerTest, LoadStreamsProgressAndEndsWithModelInfo) {
  std::vector<v1::LoadModelProgress> messages;
  grpc::Status status =
      Load("tiny", "tiny", &messages, R"({"quant_method": "eetq", "modules_to_not_convert": []})");
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_GE(messages.size(), 2u);
  std::vector<std::string> phases;
  for (size_t i = 0; i < messages.size(); ++i) {
    EXPECT_EQ(messages[i].has_model(), i + 1 == messages.size()) << i;
    if (phases.empty() || phases.back() != messages[i].phase()) {
      phases.push_back(messages[i].phase());
    }
  }
  // Reports within a phase may be coalesced, but every phase arrives, in order.
  EXPECT_THAT(phases, ::testing::ElementsAre("config", "quantizer", "skeleton", "weights",
                                             "post_process", "ready"));
  const v1::LoadModelProgress& last = messages.back();
  EXPECT_EQ(last.phase(), "ready");
  ASSERT_TRUE(last.has_model());
  const v1::ModelInfo& info = last.model();
  EXPECT_EQ(info.name(), "tiny");
  EXPECT_EQ(info.path(), "tiny");
  EXPECT_EQ(info.state(), v1::ModelInfo::READY);
  EXPECT_EQ(info.task(), v1::ModelInfo::GENERATE);
  EXPECT_EQ(info.architecture(), "FakeForCausalLM");
  EXPECT_EQ(info.quant_method(), "eetq");
  EXPECT_THAT(info.quantization_config(), HasSubstr("eetq"));
  EXPECT_EQ(info.dtype(), "float32");
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(info.memory_footprint_bytes(), 4 << 20);
  EXPECT_GT(info.parameters(), 0);
  EXPECT_GT(info.peak_load_memory_bytes(), 0);
  EXPECT_GE(info.load_seconds(), 0);
  EXPECT_EQ(last.tensors_total(), 4);
}

TEST_F(ServerTest, LoadPassesCalibrationTextsToTheEngine) {
  v1::LoadModelRequest request;
  request.set_name("calibrated");
  request.set_path("tiny");
  request.set_quantization_config(R"({"quant_method": "quanto", "activations": "int8"})");
  request.add_calibration_texts("In the beginning");
  request.add_calibration_texts("And God said");
  grpc::ClientContext context;
  auto reader = models_->LoadModel(&context, request);
  v1::LoadModelProgress progress;
  while (reader->Read(&progress)) {
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  absl::MutexLock lock(&stats_->mu);
  EXPECT_THAT(stats_->last_calibration_texts,
              ::testing::ElementsAre("In the beginning", "And God said"));
}

TEST_F(ServerTest, ListAndGet) {
  ASSERT_TRUE(Load("b-model", "tiny").ok());
  ASSERT_TRUE(Load("a-model", "tiny2").ok());
  v1::ListModelsResponse list;
  grpc::ClientContext context;
  ASSERT_TRUE(models_->ListModels(&context, v1::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  EXPECT_EQ(list.models(0).name(), "a-model");
  EXPECT_EQ(list.models(1).name(), "b-model");
  EXPECT_EQ(list.models(1).state(), v1::ModelInfo::READY);
  absl::StatusOr<v1::ModelInfo> info = Get("a-model");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->path(), "tiny2");
  EXPECT_EQ(info->quant_method(), "none");
}

TEST_F(ServerTest, DuplicateNameIsAlreadyExists) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  grpc::Status status = Load("tiny", "tiny2");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(status.error_message(), StartsWith("name: "));
}

TEST_F(ServerTest, UnknownModelIsNotFound) {
  EXPECT_EQ(Generate(GenerateRequest("ghost", "hi")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Get("ghost").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Unload("ghost").error_code(), grpc::StatusCode::NOT_FOUND);
  v1::EmbedRequest embed;
  embed.set_model("ghost");
  embed.add_texts("x");
  v1::EmbedResponse response;
  grpc::ClientContext context;
  EXPECT_EQ(inference_->Embed(&context, embed, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// With token files, admin RPCs need an admin token and inference RPCs (and the listings) an
// inference or admin token: missing is UNAUTHENTICATED, wrong PERMISSION_DENIED; health stays
// open; a rewritten token file takes effect without a restart.
TEST_F(ServerTest, BearerTokensGuardAdminAndInferenceRpcs) {
  const fs::path admin = root_ / "admin.tokens", reader = root_ / "reader.tokens";
  std::ofstream(admin) << "# operators\nadmin-secret\n";
  std::ofstream(reader) << "reader-secret\n";
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  admin_token_file_ = admin.string();
  inference_token_file_ = reader.string();
  ASSERT_TRUE(StartServer().ok());

  const auto with = [](grpc::ClientContext& c, const std::string& token) {
    if (!token.empty()) c.AddMetadata("authorization", "Bearer " + token);
  };
  const auto load = [&](const std::string& token) {
    v1::LoadModelRequest request;
    request.set_name("tiny");
    request.set_path("tiny");
    grpc::ClientContext context;
    with(context, token);
    auto reader = models_->LoadModel(&context, request);
    v1::LoadModelProgress progress;
    while (reader->Read(&progress)) {
    }
    return reader->Finish().error_code();
  };
  const auto generate = [&](const std::string& token) {
    grpc::ClientContext context;
    with(context, token);
    auto reader = inference_->Generate(&context, GenerateRequest("tiny", "hi"));
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish().error_code();
  };
  const auto unary = [&](const std::string& token, auto call) {
    grpc::ClientContext context;
    with(context, token);
    return call(context).error_code();
  };
  const auto list_models = [&](grpc::ClientContext& c) {
    v1::ListModelsResponse r;
    return models_->ListModels(&c, v1::ListModelsRequest(), &r);
  };
  const auto unload = [&](grpc::ClientContext& c) {
    v1::UnloadModelRequest q;
    q.set_name("tiny");
    v1::UnloadModelResponse r;
    return models_->UnloadModel(&c, q, &r);
  };
  const auto save = [&](grpc::ClientContext& c) {
    v1::SaveModelRequest q;
    q.set_name("tiny");
    q.set_path("saved");
    v1::SaveModelResponse r;
    return models_->SaveModel(&c, q, &r);
  };
  const auto set_route = [&](grpc::ClientContext& c) {
    v1::SetRouteRequest q;
    q.mutable_route()->set_name("r");
    v1::Route r;
    return models_->SetRoute(&c, q, &r);
  };
  const auto score = [&](grpc::ClientContext& c) {
    v1::ScoreRequest q;
    q.set_model("tiny");
    q.set_text("hi");
    v1::ScoreResponse r;
    return inference_->Score(&c, q, &r);
  };
  const auto tokenize = [&](grpc::ClientContext& c) {
    v1::TokenizeRequest q;
    q.set_model("tiny");
    q.set_text("hi");
    v1::TokenizeResponse r;
    return inference_->Tokenize(&c, q, &r);
  };
  using grpc::StatusCode;
  EXPECT_EQ(load(""), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(load("reader-secret"), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(load("admin-secret "), StatusCode::PERMISSION_DENIED);
  ASSERT_EQ(load("admin-secret"), StatusCode::OK);
  EXPECT_EQ(generate(""), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(generate("wrong"), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(generate("reader-secret"), StatusCode::OK);
  EXPECT_EQ(generate("admin-secret"), StatusCode::OK);
  for (auto call : std::vector<std::function<grpc::Status(grpc::ClientContext&)>>{
           list_models, score, tokenize}) {
    EXPECT_EQ(unary("", call), StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(unary("reader-secret", call), StatusCode::OK);
  }
  for (auto call : std::vector<std::function<grpc::Status(grpc::ClientContext&)>>{
           unload, save, set_route}) {
    EXPECT_EQ(unary("", call), StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(unary("reader-secret", call), StatusCode::PERMISSION_DENIED);
  }
  {  // Not "Bearer <token>": UNAUTHENTICATED.
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Basic YWRtaW46YWRtaW4=");
    v1::ListModelsResponse r;
    EXPECT_EQ(models_->ListModels(&context, v1::ListModelsRequest(), &r).error_code(),
              StatusCode::UNAUTHENTICATED);
  }
  {  // Health needs no token.
    grpc::ClientContext context;
    HealthCheckRequest request;
    HealthCheckResponse response;
    ASSERT_TRUE(health_->Check(&context, request, &response).ok());
  }
  // Rotation: the new token works and the old one stops, without a restart.
  std::ofstream(admin, std::ios::trunc) << "rotated-admin-secret\n";
  absl::SleepFor(absl::Milliseconds(1100));  // the reload interval
  EXPECT_EQ(unary("admin-secret", unload), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(unary("rotated-admin-secret", unload), StatusCode::OK);
  // A token file that cannot be read refuses startup rather than running open.
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  admin_token_file_ = (root_ / "missing.tokens").string();
  absl::Status refused = StartServer();
  EXPECT_EQ(refused.code(), absl::StatusCode::kNotFound) << refused;
  admin_token_file_.clear();
  inference_token_file_.clear();
}

// TLS and mutual TLS with a CA and certificates made here: a TLS client that trusts the CA is
// served, a plaintext one is not; with a client CA, only clients presenting a certificate it
// signed are. Bad files stop the server at startup.
// Churn, bounded in time: clients run Generate/Score/Embed/Tokenize on three models and a route
// with random deadlines and cancellations while another thread loads, unloads and saves the
// same names and a third sets and deletes the route. Every status is one the API documents
// for such races (no INTERNAL, UNKNOWN or DATA_LOSS), nothing crashes, and once the clients
// stop the queues are empty and the server shuts down cleanly.
TEST_F(ServerTest, ChurnOfRequestsLoadsUnloadsAndRoutes) {
  ASSERT_TRUE(Load("m0", "tiny").ok());
  ASSERT_TRUE(Load("m1", "tiny2").ok());
  ASSERT_TRUE(Load("e", "embed").ok());
  std::mutex mu;
  std::map<std::string, int> seen;  // "rpc code" -> count
  const auto record = [&](const std::string& rpc, const grpc::Status& s) {
    std::lock_guard<std::mutex> lock(mu);
    ++seen[rpc + " " + std::to_string(s.error_code())];
  };
  const auto context = [](grpc::ClientContext& c, std::mt19937& rng) {
    c.set_deadline(absl::ToChronoTime(
        absl::Now() + absl::Milliseconds(std::uniform_int_distribution<int>(1, 200)(rng))));
  };
  // One round of churn for `duration`: four clients, the lifecycle thread, the route thread.
  const auto churn = [&](absl::Duration duration) {
  const absl::Time end = absl::Now() + duration;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      const char* models[] = {"m0", "m1", "m2", "r"};
      while (absl::Now() < end) {
        const std::string model = models[rng() % 4];
        grpc::ClientContext c;
        context(c, rng);
        switch (rng() % 4) {
          case 0: {
            v1::GenerateRequest request = GenerateRequest(model, "hello", 1 + rng() % 8);
            auto reader = inference_->Generate(&c, request);
            v1::GenerateResponse response;
            if (rng() % 3 == 0) c.TryCancel();
            while (reader->Read(&response)) {
            }
            record("Generate", reader->Finish());
            break;
          }
          case 1: {
            v1::ScoreRequest request;
            request.set_model(model);
            request.set_text("in the beginning");
            v1::ScoreResponse response;
            record("Score", inference_->Score(&c, request, &response));
            break;
          }
          case 2: {
            v1::EmbedRequest request;
            request.set_model("e");
            request.add_texts("text");
            v1::EmbedResponse response;
            record("Embed", inference_->Embed(&c, request, &response));
            break;
          }
          default: {
            v1::TokenizeRequest request;
            request.set_model(model);
            request.set_text("tokens");
            v1::TokenizeResponse response;
            record("Tokenize", inference_->Tokenize(&c, request, &response));
          }
        }
      }
    });
  }
  threads.emplace_back([&] {  // lifecycle churn on m2 (and saves of m0)
    std::mt19937 rng(7);
    for (int i = 0; absl::Now() < end; ++i) {
      record("LoadModel", Load("m2", rng() % 2 ? "tiny" : "tiny2"));
      grpc::ClientContext c;
      v1::UnloadModelRequest unload;
      unload.set_name("m2");
      unload.set_drain_timeout_seconds(0.05 * (rng() % 3));
      v1::UnloadModelResponse unloaded;
      record("UnloadModel", models_->UnloadModel(&c, unload, &unloaded));
      grpc::ClientContext sc;
      v1::SaveModelRequest save;
      save.set_name("m0");
      save.set_path("saved-" + std::to_string(i));
      v1::SaveModelResponse saved;
      record("SaveModel", models_->SaveModel(&sc, save, &saved));
    }
  });
  threads.emplace_back([&] {  // route churn over the churned model
    while (absl::Now() < end) {
      grpc::ClientContext c;
      v1::SetRouteRequest set;
      set.mutable_route()->set_name("r");
      for (const char* m : {"m0", "m2"}) {
        v1::RouteVariant* v = set.mutable_route()->add_variants();
        v->set_model(m);
        v->set_weight(1);
      }
      v1::Route route;
      record("SetRoute", models_->SetRoute(&c, set, &route));
      grpc::ClientContext dc;
      v1::DeleteRouteRequest del;
      del.set_name("r");
      v1::DeleteRouteResponse deleted;
      record("DeleteRoute", models_->DeleteRoute(&dc, del, &deleted));
    }
  });
  for (std::thread& t : threads) t.join();
  };
  // Two rounds warm the allocator's arenas and gRPC's pools; the resident set after the last
  // round, once drained, stays within 5% of its level before it. (Measured: +1-2% per 3 s
  // round on a ~22 MiB process with free pages trimmed; LeakSanitizer finds nothing
  // unreachable, see scripts/sanitize.sh.)
  churn(absl::Seconds(1));
  churn(absl::Seconds(2));
  absl::SleepFor(absl::Milliseconds(200));
  const int64_t rss_before = ResidentBytes();
  churn(absl::Seconds(3));

  using C = grpc::StatusCode;
  // What each RPC may answer in a race: gone or going models (NOT_FOUND, UNAVAILABLE,
  // FAILED_PRECONDITION), a route naming an absent model (NOT_FOUND / FAILED_PRECONDITION),
  // a name taken (ALREADY_EXISTS), the fake's Save (UNIMPLEMENTED), the client's own deadline
  // and cancel, and full queues.
  const std::set<int> allowed = {C::OK, C::CANCELLED, C::DEADLINE_EXCEEDED, C::NOT_FOUND,
                                 C::UNAVAILABLE, C::FAILED_PRECONDITION, C::ALREADY_EXISTS,
                                 C::UNIMPLEMENTED, C::RESOURCE_EXHAUSTED, C::INVALID_ARGUMENT};
  int total = 0, ok = 0;
  for (const auto& [key, n] : seen) {
    const int code = std::stoi(key.substr(key.find(' ') + 1));
    EXPECT_TRUE(allowed.count(code)) << key << " x" << n;
    total += n;
    if (code == C::OK) ok += n;
  }
  std::cout << "churn: " << total << " calls, " << ok << " OK\n";
  EXPECT_GT(ok, 50);
  // Queues drain once the clients stop (cancelled and timed-out calls leave them too).
  std::string text;
  for (int i = 0; i < 300; ++i) {
    text = Scrape();
    if (text.find("requests_waiting{model=\"m0\",quant_method=\"none\"} 0") !=
            std::string::npos &&
        text.find("requests_running{model=\"m0\",quant_method=\"none\"} 0") !=
            std::string::npos) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  for (const char* series : {"quantserve_inference_requests_waiting{model=\"m0\",quant_method=\"none\"} 0",
                             "quantserve_inference_requests_running{model=\"m0\",quant_method=\"none\"} 0",
                             "quantserve_inference_requests_running{model=\"m1\",quant_method=\"none\"} 0"}) {
    EXPECT_THAT(text, HasSubstr(series));
  }
  const int64_t rss_after = ResidentBytes();
  std::cout << "churn RSS: " << rss_before / 1024 << " KiB before, " << rss_after / 1024
            << " KiB after\n";
  EXPECT_LE(rss_after, rss_before + rss_before / 20);
}

// A TLS server's plaintext health port (what Kubernetes' native gRPC probes reach): the same
// statuses as the main port, and nothing but grpc.health.v1.
TEST_F(ServerTest, PlaintextHealthPortBesideTls) {
  quantserve::testing::TestPki pki;
  const std::string d = MakePki(&pki);
  ASSERT_FALSE(HasFailure());
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  tls_ = {.cert_file = d + "/server.crt", .key_file = d + "/server.key"};
  health_listen_ = "127.0.0.1:0";
  ASSERT_TRUE(StartServer().ok());
  ASSERT_GT(server_->health_port(), 0);
  ASSERT_NE(server_->health_port(), server_->port());

  // Admin calls over TLS, as before.
  grpc::SslCredentialsOptions trusting;
  trusting.pem_root_certs = pki.Read(d + "/ca.crt");
  channel_ = grpc::CreateChannel(server_->address(), grpc::SslCredentials(trusting));
  models_ = v1::ModelService::NewStub(channel_);
  ASSERT_TRUE(Load("tiny", "tiny").ok());

  // The plaintext port answers health, for the server and per model, and nothing else.
  const auto plain = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->health_port()),
                                         grpc::InsecureChannelCredentials());
  health_ = Health::NewStub(plain);
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  EXPECT_EQ(HealthOf("", &code), HealthCheckResponse::SERVING);
  EXPECT_EQ(code, grpc::StatusCode::OK);
  EXPECT_EQ(HealthOf("tiny", &code), HealthCheckResponse::SERVING);
  EXPECT_EQ(code, grpc::StatusCode::OK);
  HealthOf("no-such-model", &code);
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext context;
  v1::ListModelsResponse response;
  EXPECT_EQ(v1::ModelService::NewStub(plain)
                ->ListModels(&context, v1::ListModelsRequest(), &response)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  ASSERT_TRUE(Unload("tiny").ok());
  EXPECT_NE(HealthOf("tiny", &code), HealthCheckResponse::SERVING);
}

TEST_F(ServerTest, TlsAndMutualTls) {
  quantserve::testing::TestPki pki;
  const std::string d = MakePki(&pki);
  ASSERT_FALSE(HasFailure());
  const auto read = [&](const char* name) { return pki.Read(d + "/" + name); };
  const auto list = [&](const std::shared_ptr<grpc::ChannelCredentials>& creds) {
    auto stub = v1::ModelService::NewStub(grpc::CreateChannel(server_->address(), creds));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListModelsResponse response;
    return stub->ListModels(&context, v1::ListModelsRequest(), &response).error_code();
  };
  const auto restart = [&](TlsOptions tls) {
    server_->Shutdown(absl::Seconds(1));
    server_.reset();
    tls_ = std::move(tls);
    return StartServer();
  };
  grpc::SslCredentialsOptions trusting;
  trusting.pem_root_certs = read("ca.crt");
  grpc::SslCredentialsOptions with_cert = trusting;
  with_cert.pem_cert_chain = read("client.crt");
  with_cert.pem_private_key = read("client.key");

  ASSERT_TRUE(restart({.cert_file = d + "/server.crt", .key_file = d + "/server.key"}).ok());
  EXPECT_EQ(TlsMode(tls_), "tls");
  EXPECT_EQ(list(grpc::SslCredentials(trusting)), grpc::StatusCode::OK);
  EXPECT_NE(list(grpc::InsecureChannelCredentials()), grpc::StatusCode::OK);
  grpc::SslCredentialsOptions other_ca;
  other_ca.pem_root_certs = read("client.crt");  // not the CA that signed the server
  EXPECT_NE(list(grpc::SslCredentials(other_ca)), grpc::StatusCode::OK);

  ASSERT_TRUE(restart({.cert_file = d + "/server.crt",
                       .key_file = d + "/server.key",
                       .client_ca_file = d + "/ca.crt"})
                  .ok());
  EXPECT_EQ(TlsMode(tls_), "mutual_tls");
  EXPECT_NE(list(grpc::SslCredentials(trusting)), grpc::StatusCode::OK);
  EXPECT_EQ(list(grpc::SslCredentials(with_cert)), grpc::StatusCode::OK);

  // Rotation: a certificate from another CA replaces the files (each renamed into place, as
  // cert-manager's Secret update does); new connections get it without a restart.
  ASSERT_TRUE(restart({.cert_file = d + "/server.crt", .key_file = d + "/server.key",
                       .refresh_seconds = 1})
                  .ok());
  const fs::path dir2 = root_ / "pki2";
  fs::create_directories(dir2);
  quantserve::testing::TestPki pki2;
  ASSERT_TRUE(quantserve::testing::MakeTestPki(dir2.string(), &pki2));
  for (const char* name : {"server.key", "server.crt"}) {
    fs::copy_file(dir2 / name, fs::path(d) / (std::string(name) + ".new"));
    fs::rename(fs::path(d) / (std::string(name) + ".new"), fs::path(d) / name);
  }
  grpc::SslCredentialsOptions trusting2;
  trusting2.pem_root_certs = pki2.Read(pki2.ca_crt());
  grpc::StatusCode rotated = grpc::StatusCode::UNKNOWN;
  for (int i = 0; i < 50 && rotated != grpc::StatusCode::OK; ++i) {
    absl::SleepFor(absl::Milliseconds(200));
    rotated = list(grpc::SslCredentials(trusting2));
  }
  EXPECT_EQ(rotated, grpc::StatusCode::OK) << "the new certificate was not picked up";
  EXPECT_NE(list(grpc::SslCredentials(trusting)), grpc::StatusCode::OK);

  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  tls_ = {.cert_file = d + "/server.key", .key_file = d + "/server.key"};  // no certificate
  EXPECT_EQ(StartServer().code(), absl::StatusCode::kInvalidArgument);
  tls_ = {.cert_file = d + "/server.crt"};
  EXPECT_EQ(StartServer().code(), absl::StatusCode::kInvalidArgument);
  tls_ = {.cert_file = d + "/missing.crt", .key_file = d + "/server.key"};
  EXPECT_EQ(StartServer().code(), absl::StatusCode::kNotFound);
  tls_ = {};
}

TEST_F(ServerTest, PathsAreConfinedToModelRoot) {
  struct Case {
    std::string path;
    grpc::StatusCode code;
  };
  const Case kCases[] = {
      {"../tiny", grpc::StatusCode::INVALID_ARGUMENT},
      {"tiny/../../etc", grpc::StatusCode::INVALID_ARGUMENT},
      {"/etc", grpc::StatusCode::INVALID_ARGUMENT},
      {"notes.txt", grpc::StatusCode::INVALID_ARGUMENT},
      {"missing", grpc::StatusCode::NOT_FOUND},
      // A NUL byte used to load the path cut at it ("tiny").
      {std::string("tiny\0junk", 9), grpc::StatusCode::INVALID_ARGUMENT},
      {"tiny\r", grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Case& c : kCases) {
    grpc::Status status = Load("m", c.path);
    EXPECT_EQ(status.error_code(), c.code) << c.path;
    EXPECT_THAT(status.error_message(), StartsWith("path: ")) << c.path;
  }
  EXPECT_EQ(Get("m").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, ValidationErrorsNameTheField) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  struct Case {
    std::string field;
    v1::GenerateRequest request;
  };
  std::vector<Case> cases;
  cases.push_back({"model: ", GenerateRequest("", "hi")});
  cases.push_back({"max_new_tokens: ", GenerateRequest("tiny", "hi", 0)});
  cases.push_back({"max_new_tokens: ", GenerateRequest("tiny", "hi", 101)});
  cases.push_back({"prompt: ", GenerateRequest("tiny", "")});
  v1::GenerateRequest r = GenerateRequest("tiny", "hi");
  r.mutable_sampling()->set_temperature(-1);
  cases.push_back({"sampling.temperature: ", r});
  r = GenerateRequest("tiny", "hi");
  r.mutable_sampling()->set_top_p(1.5f);
  cases.push_back({"sampling.top_p: ", r});
  r = GenerateRequest("tiny", "hi");
  r.mutable_sampling()->set_top_p(0.0f);
  cases.push_back({"sampling.top_p: ", r});
  r = GenerateRequest("tiny", "hi");
  r.mutable_sampling()->set_top_k(-1);
  cases.push_back({"sampling.top_k: ", r});
  for (const Case& c : cases) {
    grpc::Status status = Generate(c.request);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_THAT(status.error_message(), StartsWith(c.field));
  }

  v1::EmbedRequest embed;
  embed.set_model("tiny");
  for (int i = 0; i < 5; ++i) {
    embed.add_texts("x");
  }
  v1::EmbedResponse embed_response;
  {
    grpc::ClientContext context;
    grpc::Status status = inference_->Embed(&context, embed, &embed_response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), StartsWith("texts: at most 4 texts"));
  }
  embed.clear_texts();
  embed.add_texts(std::string(2000, 'x'));
  {
    grpc::ClientContext context;
    grpc::Status status = inference_->Embed(&context, embed, &embed_response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), StartsWith("texts: at most 1024 bytes"));
  }
  EXPECT_THAT(Load("", "tiny").error_message(), StartsWith("name: "));
  EXPECT_THAT(Load("x", "tiny", nullptr, "{not json").error_message(),
              StartsWith("quantization_config: "));
  EXPECT_THAT(Unload("").error_message(), StartsWith("name: "));
}

TEST_F(ServerTest, OversizedRequestIsRejectedByTheTransport) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  grpc::Status status = Generate(GenerateRequest("tiny", std::string(kMaxRequestBytes + 1, 'x')));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(ServerTest, GenerateStreamsTokensInOrderThenFinish) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  v1::GenerateRequest request = GenerateRequest("tiny", "hello", 5);
  request.set_logprobs(2);
  std::vector<v1::GenerateResponse> responses;
  grpc::Status status = Generate(request, &responses);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(responses.size(), 6u);
  std::string text;
  for (int i = 0; i < 5; ++i) {
    const v1::GenerateResponse& r = responses[i];
    ASSERT_EQ(r.token_ids_size(), 1);
    EXPECT_EQ(r.token_ids(0), 1005 + i);
    EXPECT_EQ(r.logprobs_size(), 1);
    ASSERT_EQ(r.top_logprobs_size(), 1);
    EXPECT_EQ(r.top_logprobs(0).entries_size(), 2);
    EXPECT_FALSE(r.has_finish());
    text += r.text();
  }
  EXPECT_EQ(text, "t0 t1 t2 t3 t4 ");
  const v1::GenerateResponse& last = responses.back();
  ASSERT_TRUE(last.has_finish());
  EXPECT_EQ(last.token_ids_size(), 0);
  EXPECT_EQ(last.finish().reason(), v1::GenerateFinish::LENGTH);
  EXPECT_EQ(last.finish().prompt_tokens(), 5);
  EXPECT_EQ(last.finish().completion_tokens(), 5);
  EXPECT_EQ(last.finish().served_by(), "tiny");
  EXPECT_GT(last.finish().seconds(), 0);
  EXPECT_GT(last.finish().time_to_first_token_seconds(), 0);
  EXPECT_LE(last.finish().time_to_first_token_seconds(), last.finish().seconds());

  responses.clear();
  ASSERT_TRUE(Generate(GenerateRequest("tiny", "[eos]", 10), &responses).ok());
  EXPECT_EQ(responses.back().finish().reason(), v1::GenerateFinish::EOS);
  EXPECT_EQ(responses.back().finish().completion_tokens(), 2);
}

TEST_F(ServerTest, ConcurrentGenerationsAllFinish) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  stats_->token_delay = absl::Milliseconds(1);
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      std::vector<v1::GenerateResponse> responses;
      if (Generate(GenerateRequest("tiny", std::string(i + 1, 'p'), 8), &responses).ok() &&
          responses.size() == 9 && responses[0].token_ids(0) == 1000 + i + 1) {
        ++ok;
      }
    });
  }
  for (auto& c : clients) {
    c.join();
  }
  EXPECT_EQ(ok.load(), 8);
}

TEST_F(ServerTest, ClientCancellationReachesTheEngine) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  {
    grpc::ClientContext context;
    auto reader = inference_->Generate(&context, GenerateRequest("tiny", "[block]", 50));
    v1::GenerateResponse first;
    ASSERT_TRUE(reader->Read(&first));
    EXPECT_EQ(first.text(), "t0 ");
    ASSERT_TRUE(stats_->WaitForBlocked(1));
    context.TryCancel();
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  for (int i = 0; i < 1000 && stats_->cancels.load() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ(stats_->cancels.load(), 1);
  // The pin is released once the engine finishes, and the server keeps serving.
  for (int i = 0; i < 1000 && Get("tiny")->in_flight_requests() != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ(Get("tiny")->in_flight_requests(), 0);
  EXPECT_TRUE(Generate(GenerateRequest("tiny", "again")).ok());
}

TEST_F(ServerTest, DeadlineExceededCancelsTheGeneration) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  grpc::Status status =
      Generate(GenerateRequest("tiny", "[block]", 50), nullptr, absl::Milliseconds(200));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  for (int i = 0; i < 1000 && stats_->cancels.load() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ(stats_->cancels.load(), 1);
  EXPECT_TRUE(Generate(GenerateRequest("tiny", "again")).ok());
}

TEST_F(ServerTest, UnloadDrainsAnInFlightGeneration) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  std::vector<v1::GenerateResponse> responses;
  grpc::Status generate_status;
  std::thread generation(
      [&] { generate_status = Generate(GenerateRequest("tiny", "[block]", 3), &responses); });
  ASSERT_TRUE(stats_->WaitForBlocked(1));

  grpc::Status unload_status;
  absl::Notification unloaded;
  std::thread unload([&] {
    unload_status = Unload("tiny");
    unloaded.Notify();
  });
  ASSERT_TRUE(WaitForState("tiny", v1::ModelInfo::UNLOADING));
  EXPECT_EQ(Generate(GenerateRequest("tiny", "new")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(unloaded.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  EXPECT_EQ(stats_->shutdowns.load(), 0);

  stats_->Unblock();
  generation.join();
  unload.join();
  ASSERT_TRUE(generate_status.ok()) << generate_status.error_message();
  ASSERT_EQ(responses.size(), 4u);
  EXPECT_EQ(responses.back().finish().reason(), v1::GenerateFinish::LENGTH);
  EXPECT_TRUE(unload_status.ok()) << unload_status.error_message();
  EXPECT_EQ(stats_->shutdowns.load(), 1);
  EXPECT_EQ(stats_->cancels.load(), 0);
  EXPECT_EQ(Get("tiny").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Generate(GenerateRequest("tiny", "x")).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, UnloadDrainTimeoutCancelsTheGeneration) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  std::vector<v1::GenerateResponse> responses;
  grpc::Status generate_status;
  std::thread generation(
      [&] { generate_status = Generate(GenerateRequest("tiny", "[block]", 50), &responses); });
  ASSERT_TRUE(stats_->WaitForBlocked(1));
  grpc::Status unload_status = Unload("tiny", /*drain_timeout_seconds=*/0.05);
  generation.join();
  EXPECT_TRUE(unload_status.ok()) << unload_status.error_message();
  EXPECT_EQ(stats_->cancels.load(), 1);
  EXPECT_EQ(generate_status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(generate_status.error_message(), HasSubstr("unloaded"));
  ASSERT_FALSE(responses.empty());
  EXPECT_EQ(responses.back().finish().reason(), v1::GenerateFinish::CANCELLED);
  EXPECT_EQ(Get("tiny").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, FailedLoadIsReportedAndTheServerKeepsServing) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  std::vector<v1::LoadModelProgress> messages;
  grpc::Status status = Load("bad", "broken", &messages);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(status.error_message(), HasSubstr("lm_head.weight"));
  absl::StatusOr<v1::ModelInfo> info = Get("bad");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state(), v1::ModelInfo::FAILED);
  EXPECT_THAT(info->reason(), HasSubstr("DATA_LOSS"));
  grpc::Status generate = Generate(GenerateRequest("bad", "hi"));
  EXPECT_EQ(generate.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(generate.error_message(), HasSubstr("FAILED"));
  EXPECT_TRUE(Generate(GenerateRequest("tiny", "hi")).ok());
  EXPECT_TRUE(Unload("bad").ok());
  EXPECT_EQ(Get("bad").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, LoadingModelIsUnavailable) {
  grpc::Status load_status;
  std::thread load([&] { load_status = Load("s", "slow"); });
  ASSERT_TRUE(WaitForState("s", v1::ModelInfo::LOADING));
  for (int i = 0; i < 1000 && Get("s")->load_progress().phase() != "weights"; ++i) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  absl::StatusOr<v1::ModelInfo> info = Get("s");
  EXPECT_EQ(info->load_progress().phase(), "weights");
  EXPECT_EQ(info->load_progress().tensors_total(), 4);
  grpc::Status generate = Generate(GenerateRequest("s", "hi"));
  EXPECT_EQ(generate.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(generate.error_message(), HasSubstr("LOADING"));
  EXPECT_EQ(Unload("s").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(HealthOf("s"), HealthCheckResponse::NOT_SERVING);
  stats_->ReleaseLoads();
  load.join();
  EXPECT_TRUE(load_status.ok()) << load_status.error_message();
  EXPECT_EQ(HealthOf("s"), HealthCheckResponse::SERVING);
}

TEST_F(ServerTest, HealthReportsEachModel) {
  EXPECT_EQ(HealthOf(""), HealthCheckResponse::SERVING);
  grpc::StatusCode code = grpc::StatusCode::OK;
  HealthOf("tiny", &code);
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  EXPECT_EQ(HealthOf("tiny"), HealthCheckResponse::SERVING);
  ASSERT_FALSE(Load("bad", "broken").ok());
  EXPECT_EQ(HealthOf("bad"), HealthCheckResponse::NOT_SERVING);
  ASSERT_TRUE(Unload("tiny").ok());
  EXPECT_EQ(HealthOf("tiny"), HealthCheckResponse::NOT_SERVING);
}

TEST_F(ServerTest, EmbedScoreAndTokenize) {
  ASSERT_TRUE(Load("emb", "embed").ok());
  EXPECT_EQ(Get("emb")->task(), v1::ModelInfo::EMBED);
  v1::EmbedRequest embed;
  embed.set_model("emb");
  embed.add_texts("abc");
  embed.add_texts("hello");
  embed.set_normalize(false);
  v1::EmbedResponse embedded;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(inference_->Embed(&context, embed, &embedded).ok());
  }
  ASSERT_EQ(embedded.embeddings_size(), 2);
  EXPECT_FLOAT_EQ(embedded.embeddings(1).values(0), 5.0f);
  EXPECT_EQ(embedded.served_by(), "emb");
  EXPECT_EQ(embedded.prompt_tokens(), 8);

  v1::ScoreRequest score;
  score.set_model("emb");
  score.set_text("abcd");
  v1::ScoreResponse scored;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(inference_->Score(&context, score, &scored).ok());
  }
  EXPECT_EQ(scored.token_ids_size(), 4);
  EXPECT_EQ(scored.logprobs_size(), 3);
  EXPECT_NEAR(scored.perplexity(), 2.71828, 1e-4);

  v1::TokenizeRequest tokenize;
  tokenize.set_model("emb");
  tokenize.set_text("hi");
  v1::TokenizeResponse tokens;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(inference_->Tokenize(&context, tokenize, &tokens).ok());
  }
  EXPECT_THAT(tokens.token_ids(), ::testing::ElementsAre(1, 'h', 'i'));
  EXPECT_THAT(tokens.tokens(), ::testing::ElementsAre("<s>", "h", "i"));
}

// Routes: set through the API, then every routed call names its variant.
class RouteTest : public ServerTest {
 protected:
  grpc::Status SetRoute(const std::string& name,
                        const std::vector<std::pair<std::string, uint32_t>>& variants,
                        const std::string& mirror = "", uint32_t mirror_percent = 0,
                        v1::Route* out = nullptr) {
    v1::SetRouteRequest request;
    request.mutable_route()->set_name(name);
    for (const auto& [model, weight] : variants) {
      v1::RouteVariant* v = request.mutable_route()->add_variants();
      v->set_model(model);
      v->set_weight(weight);
    }
    request.mutable_route()->set_mirror_model(mirror);
    request.mutable_route()->set_mirror_percent(mirror_percent);
    v1::Route response;
    grpc::ClientContext context;
    grpc::Status status = models_->SetRoute(&context, request, &response);
    if (out != nullptr) *out = response;
    return status;
  }
  // One routed Generate: the variant from served_by, checked against the metadata header.
  std::string Routed(const std::string& route, const std::string& key = "") {
    v1::GenerateRequest request = GenerateRequest(route, "hi", 1);
    request.set_routing_key(key);
    grpc::ClientContext context;
    auto reader = inference_->Generate(&context, request);
    v1::GenerateResponse response;
    std::string served_by;
    while (reader->Read(&response)) {
      if (response.has_finish()) served_by = response.finish().served_by();
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    const auto& metadata = context.GetServerInitialMetadata();
    auto header = metadata.find("x-quantserve-variant");
    EXPECT_NE(header, metadata.end());
    if (header != metadata.end()) {
      EXPECT_EQ(std::string(header->second.data(), header->second.size()), served_by);
    }
    return served_by;
  }
};

TEST_F(RouteTest, SplitsByWeightSticksByKeyAndNamesTheVariant) {
  ASSERT_TRUE(Load("a", "tiny").ok());
  ASSERT_TRUE(Load("b", "tiny2").ok());
  v1::Route stored;
  ASSERT_TRUE(SetRoute("chat", {{"a", 3}, {"b", 1}}, "", 0, &stored).ok());
  ASSERT_EQ(stored.variants_size(), 2);
  EXPECT_TRUE(stored.variants(0).available());
  std::map<std::string, int> counts;
  for (int i = 0; i < 400; ++i) ++counts[Routed("chat")];
  EXPECT_EQ(counts["a"], 300);
  EXPECT_EQ(counts["b"], 100);
  // 200 keys, each sent twice, land on the same variant both times.
  std::map<std::string, std::string> first;
  for (int k = 0; k < 200; ++k) first[absl::StrCat("user", k)] = Routed("chat", absl::StrCat("user", k));
  for (const auto& [key, variant] : first) EXPECT_EQ(Routed("chat", key), variant) << key;

  // Embed/Score/Tokenize take routes too (the fake scores any model).
  v1::ScoreRequest score;
  score.set_model("chat");
  score.set_text("abc");
  score.set_routing_key("user1");
  v1::ScoreResponse scored;
  grpc::ClientContext context;
  ASSERT_TRUE(inference_->Score(&context, score, &scored).ok());
  EXPECT_EQ(scored.served_by(), first["user1"]);
  EXPECT_THAT(Scrape(), HasSubstr(R"(quantserve_route_variant_weight{route="chat",variant="a"} 3)"));
}

TEST_F(RouteTest, UnloadingAVariantMovesItsTrafficWithoutErrors) {
  ASSERT_TRUE(Load("a", "tiny").ok());
  ASSERT_TRUE(Load("b", "tiny2").ok());
  ASSERT_TRUE(SetRoute("chat", {{"a", 1}, {"b", 1}}).ok());
  ASSERT_TRUE(Unload("b").ok());
  for (int i = 0; i < 20; ++i) EXPECT_EQ(Routed("chat", absl::StrCat("k", i)), "a");
  v1::ListRoutesResponse routes;
  grpc::ClientContext context;
  ASSERT_TRUE(models_->ListRoutes(&context, v1::ListRoutesRequest(), &routes).ok());
  ASSERT_EQ(routes.routes_size(), 1);
  EXPECT_TRUE(routes.routes(0).variants(0).available());
  EXPECT_FALSE(routes.routes(0).variants(1).available());
  ASSERT_TRUE(Unload("a").ok());
  std::vector<v1::GenerateResponse> responses;
  EXPECT_EQ(Generate(GenerateRequest("chat", "hi", 1), &responses).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(RouteTest, MirrorRunsItsShareAndLeavesResponsesAlone) {
  ASSERT_TRUE(Load("a", "tiny").ok());
  ASSERT_TRUE(Load("m", "tiny2").ok());
  ASSERT_TRUE(SetRoute("chat", {{"a", 1}}, "m", 50).ok());
  for (int i = 0; i < 40; ++i) EXPECT_EQ(Routed("chat"), "a");
  // The mirror's copies finish asynchronously.
  const std::string want = R"(quantserve_mirror_requests_total{model="m",quant_method="none",route="chat",variant="m"} 20)";
  for (int i = 0; i < 200 && Scrape().find(want) == std::string::npos; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(Scrape(), HasSubstr(want));
  // Routed requests are labelled with their route and variant; the variant's own queue gauge
  // stays per model.
  EXPECT_THAT(Scrape(), HasSubstr(R"(quantserve_rpc_requests_total{code="OK",model="a",quant_method="none",route="chat",rpc="Generate",variant="a"} 40)"));
}

TEST_F(RouteTest, ChangesAreCheckedAgainstTheModels) {
  ASSERT_TRUE(Load("a", "tiny").ok());
  ASSERT_TRUE(Load("emb", "embed").ok());
  // A route may not take a model's name, nor a model a route's.
  EXPECT_EQ(SetRoute("a", {{"emb", 1}}).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(SetRoute("chat", {{"a", 1}, {"later", 1}}).ok());
  EXPECT_EQ(Load("chat", "tiny2").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  // Variants must share a tokenizer; the error names the one that differs.
  const grpc::Status mixed = SetRoute("mixed", {{"a", 1}, {"emb", 1}});
  EXPECT_EQ(mixed.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(mixed.error_message(), HasSubstr("'emb'"));
  EXPECT_EQ(SetRoute("bad", {{"a", 0}}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A route none of whose variants is loaded is UNAVAILABLE; deleting it twice is NOT_FOUND.
  ASSERT_TRUE(SetRoute("ghost", {{"nobody", 1}}).ok());
  EXPECT_EQ(Generate(GenerateRequest("ghost", "hi", 1)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  v1::DeleteRouteRequest del;
  del.set_name("ghost");
  v1::DeleteRouteResponse deleted;
  {
    grpc::ClientContext context;
    EXPECT_TRUE(models_->DeleteRoute(&context, del, &deleted).ok());
  }
  grpc::ClientContext context;
  EXPECT_EQ(models_->DeleteRoute(&context, del, &deleted).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(RouteTest, StartupConfigDeclaresRoutes) {
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  const fs::path config = root_ / "startup.json";
  std::ofstream(config) << R"({"models": [{"name": "a", "path": "tiny"}],
                               "routes": [{"name": "chat", "variants": [{"model": "a", "weight": 2}]}]})";
  ASSERT_TRUE(StartServer(config.string()).ok());
  ASSERT_TRUE(WaitForState("a", v1::ModelInfo::READY));
  EXPECT_EQ(Routed("chat"), "a");
  std::ofstream(config) << R"({"routes": [{"name": "chat", "variants": [{"model": "a", "weight": -1}]}]})";
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  EXPECT_EQ(StartServer(config.string()).code(), absl::StatusCode::kInvalidArgument);
}

// Compare on fake models: a copy agrees exactly; a "quantized" fake's KL is the one
// computed here from the fake's distributions.
class CompareTest : public ServerTest {
 protected:
  grpc::Status Compare(const v1::CompareRequest& request, v1::CompareReport* report,
                       std::vector<std::string>* phases = nullptr) {
    grpc::ClientContext context;
    auto reader = inference_->Compare(&context, request);
    v1::CompareProgress progress;
    while (reader->Read(&progress)) {
      if (phases != nullptr) phases->push_back(progress.phase());
      if (progress.has_report()) *report = progress.report();
    }
    return reader->Finish();
  }
  static v1::CompareRequest Request(const std::string& baseline,
                                    const std::vector<std::string>& candidates) {
    v1::CompareRequest r;
    r.set_baseline(baseline);
    for (const std::string& c : candidates) r.add_candidates(c);
    r.add_texts("In the beginning");
    r.add_texts("and the earth was without form");
    r.set_continuation_tokens(4);
    r.set_speed_new_tokens(3);
    return r;
  }
};

TEST_F(CompareTest, ReportsDivergenceAgainstTheBaseline) {
  ASSERT_TRUE(Load("base", "tiny").ok());
  ASSERT_TRUE(Load("copy", "tiny2").ok());
  ASSERT_TRUE(Load("q", "tiny", nullptr, R"({"quant_method": "bitsandbytes", "load_in_4bit": true})").ok());
  v1::CompareReport report;
  std::vector<std::string> phases;
  const grpc::Status status = Compare(Request("base", {"copy", "q"}), &report, &phases);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(phases, ::testing::Contains("score"));
  EXPECT_EQ(phases.back(), "done");
  EXPECT_EQ(report.baseline(), "base");
  EXPECT_EQ(report.texts(), 2);
  // "<s>" + bytes: 17 and 31 tokens, 16 + 30 scored positions.
  EXPECT_EQ(report.tokens(), 46);
  ASSERT_EQ(report.variants_size(), 3);
  const v1::CompareVariant& copy = report.variants(1);
  EXPECT_EQ(copy.model(), "copy");
  EXPECT_LT(copy.kl_mean(), 1e-6);
  EXPECT_DOUBLE_EQ(copy.same_top1(), 1.0);
  EXPECT_NEAR(copy.ppl_ratio(), 1.0, 1e-9);
  EXPECT_EQ(copy.greedy_agreement_tokens(), 4);
  EXPECT_GT(copy.decode_tokens_per_second(), 0);
  EXPECT_GT(copy.decode_ratio(), 0);
  // The fakes' rows are the same at every position: KL(base||q) is one number.
  const std::vector<float> b = testing::FakeDistribution("none");
  const std::vector<float> q = testing::FakeDistribution("bitsandbytes");
  double kl = 0;
  for (int v = 0; v < testing::kFakeVocab; ++v) kl += std::exp(double(b[v])) * (b[v] - q[v]);
  const v1::CompareVariant& quant = report.variants(2);
  EXPECT_EQ(quant.quant_method(), "bitsandbytes");
  EXPECT_NEAR(quant.kl_mean(), kl, 1e-6 * kl + 1e-9);
  EXPECT_NEAR(quant.kl_max(), kl, 1e-6 * kl + 1e-9);
  EXPECT_GT(quant.kl_mean(), 1e-3);
  EXPECT_EQ(quant.kl_per_token_size(), 46);
  EXPECT_DOUBLE_EQ(quant.same_top1(), 1.0);  // sharpening keeps the argmax
  EXPECT_NE(quant.ppl_ratio(), 1.0);
  EXPECT_THAT(Scrape(), HasSubstr(R"(quantserve_compare_top1_agreement{baseline="base",variant="q"} 1)"));
}

// Every metric the shipped Grafana dashboard and Prometheus rules query is one this server
// exports: a renamed metric fails here, not silently on an operator's dashboard.
// The server does what fills every family first: loads, Generate, Embed, a route with a
// mirror, a Compare.
TEST_F(CompareTest, DashboardAndAlertRulesNameExportedMetrics) {
  ASSERT_TRUE(Load("base", "tiny", nullptr, R"({"quant_method": "hqq"})").ok());
  ASSERT_TRUE(Load("copy", "tiny2").ok());
  ASSERT_TRUE(Load("e", "embed").ok());
  ASSERT_TRUE(Generate(GenerateRequest("base", "hello", 3)).ok());
  {
    v1::EmbedRequest request;
    request.set_model("e");
    request.add_texts("hello");
    v1::EmbedResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(inference_->Embed(&context, request, &response).ok());
  }
  {
    v1::SetRouteRequest request;
    request.mutable_route()->set_name("r");
    request.mutable_route()->add_variants()->set_model("base");
    request.mutable_route()->mutable_variants(0)->set_weight(1);
    request.mutable_route()->set_mirror_model("copy");
    request.mutable_route()->set_mirror_percent(100);
    v1::Route response;
    grpc::ClientContext context;
    ASSERT_TRUE(models_->SetRoute(&context, request, &response).ok());
    v1::ScoreRequest score;
    score.set_model("r");
    score.set_text("hi");
    v1::ScoreResponse scored;
    grpc::ClientContext score_context;
    ASSERT_TRUE(inference_->Score(&score_context, score, &scored).ok());
  }
  v1::CompareReport report;
  ASSERT_TRUE(Compare(Request("base", {"copy"}), &report).ok());
  std::string text;
  // The mirror runs after the routed call returns; KV usage is sampled every 20 ms.
  for (int i = 0; i < 200 && (text.find("kv_cache_usage") == std::string::npos ||
                              text.find("quantserve_mirror_requests_total{") == std::string::npos);
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    text = Scrape();
  }
  std::set<std::string> exported;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, "# TYPE ")) {  // families, with or without series yet
      const std::string base(line.substr(0, line.find(' ')));
      exported.insert(base);
      for (const char* suffix : {"_bucket", "_count", "_sum"}) exported.insert(base + suffix);
    } else if (!line.empty() && line[0] != '#') {
      exported.insert(std::string(line.substr(0, line.find_first_of("{ "))));
    }
  }
  const std::regex metric_name(R"((quantserve_[a-z0-9_]+|vllm:[a-z_]+))");
  for (const char* file : {"deploy/grafana/quantserve-dashboard.json",
                           "deploy/prometheus/quantserve-rules.yaml"}) {
    std::ifstream in(std::string(QS_SOURCE_DIR) + "/" + file);
    ASSERT_TRUE(in) << file;
    const std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    int names = 0;
    for (auto it = std::sregex_iterator(body.begin(), body.end(), metric_name);
         it != std::sregex_iterator(); ++it, ++names) {
      EXPECT_TRUE(exported.count(it->str()) != 0) << file << " queries " << it->str()
                                                  << ", which the server does not export";
    }
    EXPECT_GE(names, 8) << file;  // the files name this many at least
  }
}

TEST_F(CompareTest, UsesTheBaselinesHeldOutTextAndChecksItsRequest) {
  ASSERT_TRUE(Load("base", "tiny").ok());
  ASSERT_TRUE(Load("copy", "tiny2").ok());
  ASSERT_TRUE(Load("emb", "embed").ok());
  v1::CompareRequest request = Request("base", {"copy"});
  request.clear_texts();
  v1::CompareReport report;
  // No heldout.txt in the baseline's directory: the empty texts field is the error.
  grpc::Status status = Compare(request, &report);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("heldout.txt"));
  std::ofstream(root_ / "tiny" / "heldout.txt") << "one\ntwo\n\nthree\n\n\nfour\n";
  ASSERT_TRUE(Compare(request, &report).ok());
  EXPECT_EQ(report.texts(), 3);

  EXPECT_EQ(Compare(Request("base", {}), &report).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Compare(Request("base", {"base"}), &report).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Compare(Request("base", {"nobody"}), &report).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Compare(Request("base", {"emb"}), &report).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  v1::CompareRequest bad = Request("base", {"copy"});
  bad.set_max_tokens(1);
  status = Compare(bad, &report);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("max_tokens"));
}

TEST_F(ServerTest, UnloadWaitsForAnInFlightEmbed) {
  ASSERT_TRUE(Load("emb", "embed").ok());
  grpc::Status embed_status;
  std::thread client([&] {
    v1::EmbedRequest embed;
    embed.set_model("emb");
    embed.add_texts("[block]");
    v1::EmbedResponse response;
    grpc::ClientContext context;
    embed_status = inference_->Embed(&context, embed, &response);
  });
  ASSERT_TRUE(stats_->WaitForBlocked(1));
  absl::Notification unloaded;
  grpc::Status unload_status;
  std::thread unload([&] {
    unload_status = Unload("emb");
    unloaded.Notify();
  });
  EXPECT_FALSE(unloaded.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  stats_->Unblock();
  client.join();
  unload.join();
  EXPECT_TRUE(embed_status.ok());
  EXPECT_TRUE(unload_status.ok());
  EXPECT_EQ(stats_->shutdowns.load(), 1);
}

TEST_F(ServerTest, SaveModelValidatesItsRequest) {
  auto save = [&](const std::string& name, const std::string& path, const std::string& size) {
    v1::SaveModelRequest request;
    request.set_name(name);
    request.set_path(path);
    request.set_max_shard_size(size);
    v1::SaveModelResponse response;
    grpc::ClientContext context;
    return models_->SaveModel(&context, request, &response);
  };
  grpc::Status status = save("tiny", "", "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("path"));
  status = save("absent", "out", "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  status = save("tiny", "../out", "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  status = save("tiny", "out", "-5GB");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("max_shard_size"));
}

TEST_F(ServerTest, MetricsCarryModelAndQuantMethodLabels) {
  ASSERT_TRUE(Load("tiny", "tiny", nullptr, R"({"quant_method": "hqq"})").ok());
  ASSERT_TRUE(Generate(GenerateRequest("tiny", "hello", 3)).ok());
  ASSERT_EQ(Generate(GenerateRequest("ghost", "hello")).error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string text = Scrape();
  for (
      const char* series : {
          R"(quantserve_rpc_requests_total{code="OK",model="tiny",quant_method="hqq",route="",rpc="Generate",variant="tiny"} 1)",
          R"(quantserve_rpc_requests_total{code="NOT_FOUND",model="",quant_method="",route="",rpc="Generate",variant=""} 1)",
          R"(quantserve_rpc_requests_total{code="OK",model="tiny",quant_method="hqq",route="",rpc="LoadModel",variant="tiny"} 1)",
          R"(quantserve_rpc_request_duration_seconds_count{model="tiny",quant_method="hqq",route="",rpc="Generate",variant="tiny"} 1)",
          R"(quantserve_generate_time_to_first_token_seconds_count{model="tiny",quant_method="hqq",route="",variant="tiny"} 1)",
          R"(quantserve_generate_inter_token_latency_seconds_count{model="tiny",quant_method="hqq",route="",variant="tiny"} 2)",
          R"(quantserve_generate_generated_tokens_total{model="tiny",quant_method="hqq",route="",variant="tiny"} 3)",
          R"(quantserve_generate_prompt_tokens_total{model="tiny",quant_method="hqq",route="",variant="tiny"} 5)",
          R"(quantserve_generate_finished_total{model="tiny",quant_method="hqq",reason="length",route="",variant="tiny"} 1)",
          R"(quantserve_inference_requests_running{model="tiny",quant_method="hqq"} 0)",
          R"(vllm:num_requests_waiting{model_name="tiny"} 0)",
          R"(quantserve_model_state{model="tiny",quant_method="hqq"} 2)",
          R"(quantserve_model_memory_footprint_bytes{model="tiny",quant_method="hqq"} 4194304)",
          R"(quantserve_model_parameters{model="tiny",quant_method="hqq"} 1048576)",
          R"(quantserve_model_loads_total{code="OK",model="tiny",quant_method="hqq"} 1)",
          R"(quantserve_model_load_duration_seconds{model="tiny",quant_method="hqq"})",
      }) {
    EXPECT_THAT(text, HasSubstr(series));
  }
  // KV usage is sampled from the model's scheduler every stats_interval (20 ms here).
  std::string sampled;
  for (int i = 0; i < 200; ++i) {
    sampled = Scrape();
    if (sampled.find("vllm:kv_cache_usage_perc") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(sampled, HasSubstr(R"(quantserve_model_kv_cache_usage_ratio{model="tiny",quant_method="hqq"} 0.25)"));
  EXPECT_THAT(sampled, HasSubstr(R"(vllm:kv_cache_usage_perc{model_name="tiny"} 0.25)"));
}

TEST_F(ServerTest, StartupConfigPreloadsModels) {
  server_->Shutdown(absl::Seconds(1));
  const fs::path config = root_ / "startup.json";
  std::ofstream(config) << R"({"models": [
      {"name": "pre", "path": "tiny", "quantization_config": {"quant_method": "eetq"}},
      {"name": "pre-bad", "path": "broken"}]})";
  ASSERT_TRUE(StartServer(config.string()).ok());
  EXPECT_THAT(server_->startup_models(), ::testing::ElementsAre("pre", "pre-bad"));
  ASSERT_TRUE(WaitForState("pre", v1::ModelInfo::READY));
  ASSERT_TRUE(WaitForState("pre-bad", v1::ModelInfo::FAILED));
  EXPECT_EQ(Get("pre")->quant_method(), "eetq");
  EXPECT_TRUE(Generate(GenerateRequest("pre", "hi")).ok());
}

TEST_F(ServerTest, StartupConfigErrorsFailStartup) {
  const fs::path config = root_ / "startup.json";
  std::ofstream(config) << R"({"models": [{"name": "x", "path": "missing"}]})";
  Server::Options options;
  options.listen_address = "127.0.0.1:0";
  options.model_root = root_.string();
  options.loader = MakeFakeLoader(stats_);
  options.metrics = metrics_.get();
  options.startup_config_path = config.string();
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("model 'x'"));
  options.startup_config_path = (root_ / "nope.json").string();
  EXPECT_EQ(Server::Create(options).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, ShutdownCancelsGenerationsPastTheDrainDeadline) {
  ASSERT_TRUE(Load("tiny", "tiny").ok());
  grpc::Status generate_status;
  std::thread generation(
      [&] { generate_status = Generate(GenerateRequest("tiny", "[block]", 50)); });
  ASSERT_TRUE(stats_->WaitForBlocked(1));
  const absl::Time start = absl::Now();
  server_->Shutdown(absl::Milliseconds(100));
  generation.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_FALSE(generate_status.ok());
  EXPECT_EQ(stats_->cancels.load(), 1);
  EXPECT_EQ(stats_->shutdowns.load(), 1);
  server_->Wait();  // returns at once: shutdown has finished
}

// Shutdown in the middle of traffic: clients keep calling while the server drains; every call
// ends with OK or a shutdown/deadline code, Shutdown returns within its drain plus a grace,
// and the port refuses afterwards.
TEST_F(ServerTest, ShutdownUnderLoad) {
  ASSERT_TRUE(Load("m0", "tiny").ok());
  ASSERT_TRUE(Load("m1", "tiny2").ok());
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::map<int, int> codes;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      while (!stop.load()) {
        grpc::Status s = t % 2 == 0
                             ? Generate(GenerateRequest(t < 2 ? "m0" : "m1", "hello", 6),
                                        nullptr, absl::Seconds(2))
                             : [&] {
                                 v1::ScoreRequest request;
                                 request.set_model(t < 2 ? "m0" : "m1");
                                 request.set_text("in the beginning");
                                 v1::ScoreResponse response;
                                 grpc::ClientContext c;
                                 c.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
                                 return inference_->Score(&c, request, &response);
                               }();
        std::lock_guard<std::mutex> lock(mu);
        ++codes[s.error_code()];
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  server_->Shutdown(absl::Milliseconds(500));
  const absl::Duration took = absl::Now() - start;
  absl::SleepFor(absl::Milliseconds(100));  // calls after shutdown are refused
  stop.store(true);
  for (std::thread& c : clients) c.join();
  EXPECT_LT(took, absl::Seconds(5));
  int ok = 0, refused = 0;
  for (const auto& [code, n] : codes) {
    EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::UNAVAILABLE ||
                code == grpc::StatusCode::CANCELLED ||
                code == grpc::StatusCode::DEADLINE_EXCEEDED)
        << "code " << code << " x" << n;
    if (code == grpc::StatusCode::OK) ok += n;
    if (code == grpc::StatusCode::UNAVAILABLE) refused += n;
  }
  EXPECT_GT(ok, 10);
  EXPECT_GT(refused, 0);  // the calls made after Shutdown
  EXPECT_EQ(stats_->shutdowns.load(), 2);  // both models shut down
}

}  // namespace
}  // namespace quantserve::server

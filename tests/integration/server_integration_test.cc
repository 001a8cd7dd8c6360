// End to end: the real quantserve binary on 127.0.0.1:0 and a real gRPC client. Greedy
// generation must equal transformers token for token (float32), Score logprobs within 1e-4,
// Embed cosine >= 0.9999 against sentence-transformers; corrupt checkpoints are DATA_LOSS and
// the server keeps serving; /metrics carries the labelled series.

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <thread>

#include "quantserve/v1/inference_service.grpc.pb.h"
#include "quantserve/v1/model_service.grpc.pb.h"
#include "tests/integration/server_process.h"
#include "tests/testing/fixtures.h"

namespace quantserve::testing {

std::string HttpGet(const std::string& host_port, const std::string& path) {
  size_t colon = host_port.rfind(':');
  std::string host = host_port.substr(0, colon), port = host_port.substr(colon + 1);
  if (host == "0.0.0.0") host = "127.0.0.1";
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return "";
  int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
  std::string out;
  if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
    if (send(fd, req.data(), req.size(), 0) == static_cast<ssize_t>(req.size())) {
      char buf[8192];
      ssize_t n;
      while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(res);
  size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

namespace {

namespace fs = std::filesystem;
namespace v1 = ::quantserve::v1;

class ServerIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = ServerProcess::Start(QS_QUANTSERVE_BINARY,
                                   {"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                                    "--model_root=" + FixturesDir(), "--log_level=info",
                                    "--drain_timeout_seconds=5"})
                  .release();
    ASSERT_NE(server_, nullptr) << "quantserve did not start";
    auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    models_ = v1::ModelService::NewStub(channel).release();
    inference_ = v1::InferenceService::NewStub(channel).release();
    for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-mistral", "minilm"}) {
      auto info = Load(name, name, "float32");
      ASSERT_TRUE(info.ok()) << name << ": " << info.status().error_message();
      loaded_[name] = *info;
    }
  }
  static void TearDownTestSuite() {
    delete models_;
    delete inference_;
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(), 0) << "graceful shutdown exits 0";
      delete server_;
    }
  }

  struct LoadResult {
    grpc::Status status;
    v1::ModelInfo info;
    std::vector<v1::LoadModelProgress> progress;
    bool ok() const { return status.ok(); }
  };

  static LoadResult LoadFull(const std::string& name, const std::string& path,
                             const std::string& dtype,
                             const std::string& quantization_config = "") {
    LoadResult r;
    grpc::ClientContext ctx;
    v1::LoadModelRequest req;
    req.set_name(name);
    req.set_path(path);
    req.set_dtype(dtype);
    req.set_quantization_config(quantization_config);
    auto reader = models_->LoadModel(&ctx, req);
    v1::LoadModelProgress p;
    while (reader->Read(&p)) {
      r.progress.push_back(p);
      if (p.has_model()) r.info = p.model();
    }
    r.status = reader->Finish();
    return r;
  }

  struct InfoOr {
    grpc::Status s;
    v1::ModelInfo info;
    bool ok() const { return s.ok(); }
    const grpc::Status& status() const { return s; }
    const v1::ModelInfo& operator*() const { return info; }
  };
  static InfoOr Load(const std::string& name, const std::string& path, const std::string& dtype) {
    LoadResult r = LoadFull(name, path, dtype);
    return {r.status, r.info};
  }

  struct GenerateResult {
    grpc::Status status;
    std::vector<int32_t> ids;
    std::vector<float> logprobs;
    std::string text;
    v1::GenerateFinish finish;
    int messages = 0;
  };
  static GenerateResult Generate(const v1::GenerateRequest& req,
                                 std::chrono::milliseconds deadline = std::chrono::seconds(60)) {
    GenerateResult r;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    auto reader = inference_->Generate(&ctx, req);
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) {
      r.messages++;
      r.ids.insert(r.ids.end(), resp.token_ids().begin(), resp.token_ids().end());
      r.logprobs.insert(r.logprobs.end(), resp.logprobs().begin(), resp.logprobs().end());
      r.text += resp.text();
      if (resp.has_finish()) r.finish = resp.finish();
    }
    r.status = reader->Finish();
    return r;
  }

  // Copies tiny-llama into a scratch dir inside the model root and applies `corrupt` to its
  // model.safetensors bytes. Returns the path relative to the model root.
  static std::string CorruptCopy(const std::string& tag,
                                 const std::function<void(std::string&)>& corrupt) {
    const fs::path src = fs::path(FixturesDir()) / "tiny-llama";
    const std::string rel = "integration-scratch/" + tag;
    const fs::path dst = fs::path(FixturesDir()) / rel;
    fs::remove_all(dst);
    fs::create_directories(dst);
    for (const auto& e : fs::directory_iterator(src)) fs::copy(e.path(), dst / e.path().filename());
    std::ifstream in(dst / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    in.close();
    corrupt(bytes);
    std::ofstream out(dst / "model.safetensors", std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return rel;
  }

  static uint64_t HeaderLength(const std::string& bytes) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
    return n;
  }
  // Rewrites the JSON header with `edit` and keeps the data section as it was.
  static void EditHeader(std::string& bytes, const std::function<void(nlohmann::json&)>& edit) {
    const uint64_t n = HeaderLength(bytes);
    nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
    edit(header);
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
    bytes = out + text + bytes.substr(8 + n);
  }

  static void Unload(const std::string& name) {
    grpc::ClientContext ctx;
    v1::UnloadModelRequest req;
    req.set_name(name);
    v1::UnloadModelResponse resp;
    (void)models_->UnloadModel(&ctx, req, &resp);
  }

  // Runs a Compare to its end; the report is the last message's.
  static grpc::Status Compare(const v1::CompareRequest& request, v1::CompareReport* report) {
    grpc::ClientContext ctx;
    auto reader = inference_->Compare(&ctx, request);
    v1::CompareProgress p;
    while (reader->Read(&p)) {
      if (p.has_report()) *report = p.report();
    }
    return reader->Finish();
  }

  static GenerateResult Greedy(const std::string& model, int tokens) {
    v1::GenerateRequest req;
    req.set_model(model);
    req.set_prompt("In the beginning");
    req.set_max_new_tokens(tokens);
    req.set_ignore_eos(true);
    return Generate(req);
  }

  static ServerProcess* server_;
  static v1::ModelService::Stub* models_;
  static v1::InferenceService::Stub* inference_;
  static std::map<std::string, v1::ModelInfo> loaded_;
};

ServerProcess* ServerIntegrationTest::server_ = nullptr;
v1::ModelService::Stub* ServerIntegrationTest::models_ = nullptr;
v1::InferenceService::Stub* ServerIntegrationTest::inference_ = nullptr;
std::map<std::string, v1::ModelInfo> ServerIntegrationTest::loaded_;

TEST_F(ServerIntegrationTest, GreedyGenerationMatchesTransformersTokenForToken) {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-mistral"}) {
    nlohmann::json ref = ReadJsonFile(FixturePath(name) + "/reference.json");
    int checked = 0;
    for (const auto& prompt : ref["prompts"]) {
      v1::GenerateRequest req;
      req.set_model(name);
      req.set_prompt(prompt["text"].get<std::string>());  // tokenized by the server
      auto expected = prompt["greedy_ids"].get<std::vector<int32_t>>();
      ASSERT_EQ(expected.size(), 32u);
      req.set_max_new_tokens(32);
      req.set_ignore_eos(true);
      req.set_logprobs(1);
      GenerateResult r = Generate(req);
      ASSERT_TRUE(r.status.ok()) << r.status.error_message();
      EXPECT_EQ(r.ids, expected) << name << ": " << prompt["text"];
      auto expected_lp = prompt["greedy_logprobs"].get<std::vector<float>>();
      ASSERT_EQ(r.logprobs.size(), expected_lp.size());
      for (size_t i = 0; i < expected_lp.size(); ++i) {
        EXPECT_NEAR(r.logprobs[i], expected_lp[i], 1e-4) << name << " step " << i;
      }
      EXPECT_EQ(r.finish.reason(), v1::GenerateFinish::LENGTH);
      EXPECT_EQ(r.finish.completion_tokens(), 32);
      EXPECT_EQ(r.finish.prompt_tokens(),
                static_cast<int32_t>(prompt["input_ids"].size()));
      EXPECT_GE(r.messages, 2);  // streamed, not one blob
      ++checked;
    }
    std::cout << "[ greedy ] " << name << ": " << checked << " prompts x 32 tokens identical"
              << std::endl;
  }
}

TEST_F(ServerIntegrationTest, ScoreLogprobsMatchTransformers) {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-mistral"}) {
    nlohmann::json ref = ReadJsonFile(FixturePath(name) + "/reference.json");
    double worst = 0;
    for (const auto& item : ref["score"]) {
      grpc::ClientContext ctx;
      v1::ScoreRequest req;
      req.set_model(name);
      req.set_text(item["text"].get<std::string>());
      v1::ScoreResponse resp;
      grpc::Status s = inference_->Score(&ctx, req, &resp);
      ASSERT_TRUE(s.ok()) << s.error_message();
      auto ids = item["input_ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()), ids);
      auto expected = item["logprobs"].get<std::vector<float>>();
      ASSERT_EQ(resp.logprobs_size(), static_cast<int>(expected.size()));
      for (size_t i = 0; i < expected.size(); ++i) {
        worst = std::max(worst, std::abs(double(resp.logprobs(i)) - expected[i]));
      }
      EXPECT_NEAR(resp.perplexity(), item["perplexity"].get<double>(),
                  1e-4 * item["perplexity"].get<double>());
    }
    EXPECT_LE(worst, 1e-4) << name;
    std::cout << "[ score ] " << name << ": max |logprob - transformers| = " << worst << std::endl;
  }
}

TEST_F(ServerIntegrationTest, EmbeddingsMatchSentenceTransformers) {
  nlohmann::json ref = ReadJsonFile(FixturePath("minilm") + "/reference.json");
  grpc::ClientContext ctx;
  v1::EmbedRequest req;
  req.set_model("minilm");
  for (const auto& t : ref["texts"]) req.add_texts(t.get<std::string>());
  v1::EmbedResponse resp;
  grpc::Status s = inference_->Embed(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.embeddings_size(), static_cast<int>(ref["embeddings"].size()));
  double worst = 1;
  for (int i = 0; i < resp.embeddings_size(); ++i) {
    auto e = ref["embeddings"][i].get<std::vector<float>>();
    const auto& a = resp.embeddings(i).values();
    ASSERT_EQ(a.size(), static_cast<int>(e.size()));
    double dot = 0, na = 0, ne = 0;
    for (size_t k = 0; k < e.size(); ++k) {
      dot += double(a[k]) * e[k];
      na += double(a[k]) * a[k];
      ne += double(e[k]) * e[k];
    }
    worst = std::min(worst, dot / std::sqrt(na * ne));
  }
  EXPECT_GE(worst, 0.9999);
  EXPECT_EQ(resp.served_by(), "minilm");
  std::cout << "[ embed ] minilm: min cosine vs sentence-transformers = " << std::setprecision(9) << worst << " over "
            << resp.embeddings_size() << " texts" << std::endl;
}

TEST_F(ServerIntegrationTest, LoadStreamsProgressAndReportsPeakMemory) {
  LoadResult r = LoadFull("mistral-again", "tiny-mistral", "float32");
  ASSERT_TRUE(r.ok()) << r.status.error_message();
  ASSERT_GE(r.progress.size(), 3u);
  EXPECT_EQ(r.info.state(), v1::ModelInfo::READY);
  EXPECT_EQ(r.info.quant_method(), "none");
  EXPECT_EQ(r.info.architecture(), "MistralForCausalLM");
  int64_t file_bytes = 0;
  for (const auto& e : fs::directory_iterator(FixturePath("tiny-mistral"))) {
    if (e.path().extension() == ".safetensors") file_bytes += static_cast<int64_t>(e.file_size());
  }
  EXPECT_GT(r.info.memory_footprint_bytes(), 0);
  EXPECT_LE(r.info.memory_footprint_bytes(), file_bytes);
  std::cout << "[ load ] tiny-mistral (5 shards) float32: file_bytes=" << file_bytes
            << " model_bytes=" << r.info.memory_footprint_bytes()
            << " peak_rss_growth_bytes=" << r.info.peak_load_memory_bytes()
            << " seconds=" << r.info.load_seconds() << std::endl;
  // The largest fixture, MiniLM, as loaded in SetUp.
  const v1::ModelInfo& m = loaded_["minilm"];
  const int64_t minilm_file =
      static_cast<int64_t>(fs::file_size(FixturePath("minilm") + "/model.safetensors"));
  std::cout << "[ load ] minilm float32: file_bytes=" << minilm_file
            << " model_bytes=" << m.memory_footprint_bytes()
            << " peak_rss_growth_bytes=" << m.peak_load_memory_bytes()
            << " ratio_to_file=" << double(m.peak_load_memory_bytes()) / minilm_file << std::endl;
  EXPECT_LE(m.peak_load_memory_bytes(), minilm_file + (48 << 20));
  grpc::ClientContext ctx;
  v1::UnloadModelRequest unload;
  unload.set_name("mistral-again");
  v1::UnloadModelResponse unloaded;
  EXPECT_TRUE(models_->UnloadModel(&ctx, unload, &unloaded).ok());
}

TEST_F(ServerIntegrationTest, CorruptCheckpointsAreDataLossAndServerKeepsServing) {
  struct Case {
    const char* tag;
    std::function<void(std::string&)> corrupt;
  };
  std::vector<Case> cases = {
      {"truncated", [](std::string& b) { b.resize(b.size() - 1000); }},
      {"header-beyond-file",
       [](std::string& b) {
         uint64_t n = b.size();
         for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((n >> (8 * i)) & 0xff);
       }},
      {"overlapping-offsets",
       [](std::string& b) {
         EditHeader(b, [](nlohmann::json& h) {
           // Move the second tensor (by offset) to start inside the first.
           std::vector<std::pair<uint64_t, std::string>> by_offset;
           for (auto& [k, v] : h.items()) {
             if (k != "__metadata__") by_offset.push_back({v["data_offsets"][0], k});
           }
           std::sort(by_offset.begin(), by_offset.end());
           auto& second = h[by_offset[1].second]["data_offsets"];
           uint64_t len = second[1].get<uint64_t>() - second[0].get<uint64_t>();
           second[0] = second[0].get<uint64_t>() - 4;
           second[1] = second[0].get<uint64_t>() + len;
         });
       }},
      {"wrong-byte-length",
       [](std::string& b) {
         EditHeader(b, [](nlohmann::json& h) {
           auto& t = h["model.norm.weight"];
           t["shape"] = {t["shape"][0].get<int64_t>() + 1};
         });
       }},
      {"bad-dtype",
       [](std::string& b) {
         EditHeader(b, [](nlohmann::json& h) { h["model.norm.weight"]["dtype"] = "F33"; });
       }},
      {"non-json-header", [](std::string& b) { b[8] = 'x'; }},
  };
  for (const Case& c : cases) {
    const std::string path = CorruptCopy(c.tag, c.corrupt);
    LoadResult r = LoadFull(std::string("corrupt-") + c.tag, path, "float32");
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DATA_LOSS)
        << c.tag << ": " << r.status.error_message();
    EXPECT_NE(r.status.error_message().find("model.safetensors"), std::string::npos)
        << c.tag << ": " << r.status.error_message();
    std::cout << "[ corrupt ] " << c.tag << ": " << r.status.error_code() << " "
              << r.status.error_message() << std::endl;
    // The failed model is listed as FAILED with the reason, and can be unloaded.
    grpc::ClientContext get_ctx;
    v1::GetModelRequest get;
    get.set_name(std::string("corrupt-") + c.tag);
    v1::ModelInfo info;
    grpc::Status gs = models_->GetModel(&get_ctx, get, &info);
    if (gs.ok()) {
      EXPECT_EQ(info.state(), v1::ModelInfo::FAILED);
      grpc::ClientContext un_ctx;
      v1::UnloadModelRequest un;
      un.set_name(get.name());
      v1::UnloadModelResponse ur;
      EXPECT_TRUE(models_->UnloadModel(&un_ctx, un, &ur).ok());
    }
    // Still serving.
    v1::GenerateRequest req;
    req.set_model("tiny-llama");
    req.set_prompt("And God said");
    req.set_max_new_tokens(4);
    GenerateResult g = Generate(req);
    EXPECT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(g.ids.size(), 4u);
  }
  fs::remove_all(fs::path(FixturesDir()) / "integration-scratch");
  EXPECT_TRUE(server_->Alive());
}

TEST_F(ServerIntegrationTest, CancelledCallStopsGenerationAndServerKeepsServing) {
  v1::GenerateRequest req;
  req.set_model("tiny-mistral");
  req.set_prompt("And");
  req.set_max_new_tokens(400);
  req.set_ignore_eos(true);
  {
    grpc::ClientContext ctx;
    auto reader = inference_->Generate(&ctx, req);
    v1::GenerateResponse resp;
    ASSERT_TRUE(reader->Read(&resp));  // generation is running
    ctx.TryCancel();
    while (reader->Read(&resp)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // A short deadline ends the call with DEADLINE_EXCEEDED.
  GenerateResult late = Generate(req, std::chrono::milliseconds(30));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  req.set_max_new_tokens(3);
  GenerateResult r = Generate(req);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids.size(), 3u);
}

// Concurrent streams on one model run in one continuous batch: each gets the tokens it gets
// alone, and ModelInfo says how the model batches and which kernels its layers run.
TEST_F(ServerIntegrationTest, ConcurrentStreamsShareTheBatchAndMatchSoloRuns) {
  const char* prompts[] = {"In the beginning", "And God said", "The LORD is my shepherd",
                           "Blessed are", "Jesus wept", "For God so loved the world"};
  std::vector<v1::GenerateRequest> reqs;
  std::vector<GenerateResult> solo;
  for (const char* p : prompts) {
    v1::GenerateRequest req;
    req.set_model("tiny-llama");
    req.set_prompt(p);
    req.set_max_new_tokens(24);
    req.set_ignore_eos(true);
    req.set_logprobs(1);
    reqs.push_back(req);
    solo.push_back(Generate(req));
    ASSERT_TRUE(solo.back().status.ok()) << solo.back().status.error_message();
  }
  std::vector<GenerateResult> together(reqs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < reqs.size(); ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(reqs[i]); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].ids, solo[i].ids) << prompts[i];
    ASSERT_EQ(together[i].logprobs.size(), solo[i].logprobs.size());
    for (size_t k = 0; k < solo[i].logprobs.size(); ++k) {
      EXPECT_NEAR(together[i].logprobs[k], solo[i].logprobs[k], 1e-4) << prompts[i] << " " << k;
    }
  }
  grpc::ClientContext ctx;
  v1::GetModelRequest get;
  get.set_name("tiny-llama");
  v1::ModelInfo info;
  ASSERT_TRUE(models_->GetModel(&ctx, get, &info).ok());
  EXPECT_EQ(info.max_batch_size(), 32);
  EXPECT_GT(info.kv_cache_budget_bytes(), 0);
  EXPECT_FALSE(info.deterministic());
  ASSERT_EQ(info.kernels().count("aten_linear"), 1u);  // float32 model: every linear is dense
  int layers = 0;
  for (const auto& [kernel, n] : info.kernels()) layers += n;
  EXPECT_GT(layers, 0);
}

TEST_F(ServerIntegrationTest, BadRequestsGetPreciseCodes) {
  {
    v1::GenerateRequest req;
    req.set_model("no-such-model");
    req.set_prompt("x");
    EXPECT_EQ(Generate(req).status.error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    v1::GenerateRequest req;
    req.set_model("tiny-llama");
    req.set_prompt("x");
    req.mutable_sampling()->set_temperature(-1);
    GenerateResult r = Generate(req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.status.error_message().find("temperature"), std::string::npos);
  }
  {
    v1::GenerateRequest req;
    req.set_model("tiny-llama");
    req.add_input_ids(1 << 30);
    EXPECT_EQ(Generate(req).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::EmbedRequest req;
    req.set_model("tiny-llama");
    req.add_texts("x");
    v1::EmbedResponse resp;
    EXPECT_EQ(inference_->Embed(&ctx, req, &resp).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    LoadResult r = LoadFull("bad-quant", "tiny-llama", "float32");
    ASSERT_TRUE(r.ok());  // sanity: a second name for the same directory loads
    grpc::ClientContext ctx;
    v1::LoadModelRequest req;
    req.set_name("bad-quant-2");
    req.set_path("tiny-llama");
    req.set_quantization_config(R"({"quant_method": "int3_magic"})");
    auto reader = models_->LoadModel(&ctx, req);
    v1::LoadModelProgress p;
    while (reader->Read(&p)) {
    }
    grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("supported"), std::string::npos) << s.error_message();
    for (const char* n : {"bad-quant", "bad-quant-2"}) {
      grpc::ClientContext uctx;
      v1::UnloadModelRequest un;
      un.set_name(n);
      v1::UnloadModelResponse ur;
      (void)models_->UnloadModel(&uctx, un, &ur);
    }
  }
  {
    LoadResult r = LoadFull("escape", "../../etc", "float32");
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(ServerIntegrationTest, SampledGenerationIsReproducibleBySeedAndStopsOnStopString) {
  v1::GenerateRequest req;
  req.set_model("tiny-llama");
  req.set_prompt("In the beginning");
  req.set_max_new_tokens(24);
  req.set_ignore_eos(true);
  req.mutable_sampling()->set_temperature(0.9f);
  req.mutable_sampling()->set_top_p(0.9f);
  req.mutable_sampling()->set_seed(1234);
  GenerateResult a = Generate(req), b = Generate(req);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.text, b.text);
  // Stop on a string taken from the middle of the greedy text.
  v1::GenerateRequest greedy;
  greedy.set_model("tiny-llama");
  greedy.set_prompt("In the beginning");
  greedy.set_max_new_tokens(24);
  greedy.set_ignore_eos(true);
  GenerateResult g = Generate(greedy);
  ASSERT_TRUE(g.status.ok());
  ASSERT_GE(g.text.size(), 12u);
  const std::string stop = g.text.substr(6, 3);
  greedy.add_stop(stop);
  GenerateResult s = Generate(greedy);
  ASSERT_TRUE(s.status.ok());
  EXPECT_EQ(s.finish.reason(), v1::GenerateFinish::STOP);
  EXPECT_EQ(s.text, g.text.substr(0, g.text.find(stop)));
}

TEST_F(ServerIntegrationTest, MetricsAreLabelledByModelAndQuantMethod) {
  std::string body = HttpGet(server_->metrics_address(), "/metrics");
  ASSERT_FALSE(body.empty()) << "no /metrics from " << server_->metrics_address();
  EXPECT_NE(body.find("model=\"tiny-llama\""), std::string::npos);
  EXPECT_NE(body.find("quant_method=\"none\""), std::string::npos);
  for (const char* family : {"quantserve_rpc_requests_total", "quantserve_rpc_request_duration_seconds",
                             "quantserve_model_memory_footprint_bytes"}) {
    EXPECT_NE(body.find(family), std::string::npos) << family;
  }
}

TEST_F(ServerIntegrationTest, QuantizedAtLoadModelsServeAndReportTheirMethod) {
  struct Case {
    const char* name;
    const char* config;
    const char* method;
  };
  const Case cases[] = {
      {"tl-bnb-int8", R"({"quant_method": "bitsandbytes", "load_in_8bit": true})", "bitsandbytes"},
      {"tl-bnb-nf4", R"({"load_in_4bit": true, "bnb_4bit_quant_type": "nf4"})", "bitsandbytes"},
      {"tl-hqq-4bit", R"({"quant_method": "hqq", "nbits": 4, "group_size": 64})", "hqq"},
      {"tl-quanto-int4", R"({"quant_method": "quanto", "weights": "int4"})", "quanto"},
      {"tl-eetq", R"({"quant_method": "eetq", "weights": "int8"})", "eetq"},
      {"tl-torchao-int8",
       R"({"quant_method": "torchao", "quant_type": "int8_weight_only"})", "torchao"},
  };
  const int64_t float_bytes = loaded_.at("tiny-llama").memory_footprint_bytes();
  for (const Case& c : cases) {
    LoadResult r = LoadFull(c.name, "tiny-llama", "float32", c.config);
    ASSERT_TRUE(r.ok()) << c.name << ": " << r.status.error_message();
    EXPECT_EQ(r.info.quant_method(), c.method) << c.name;
    // ModelInfo carries the normalized config: the method's defaults filled in.
    nlohmann::json normalized = nlohmann::json::parse(r.info.quantization_config(), nullptr, false);
    ASSERT_TRUE(normalized.is_object()) << c.name << ": " << r.info.quantization_config();
    EXPECT_EQ(normalized.value("quant_method", ""), c.method) << c.name;
    EXPECT_NE(normalized, nlohmann::json::parse(c.config)) << c.name;  // defaults filled in
    EXPECT_LT(r.info.memory_footprint_bytes(), float_bytes) << c.name;
    GenerateResult g = Greedy(c.name, 8);
    ASSERT_TRUE(g.status.ok()) << c.name << ": " << g.status.error_message();
    EXPECT_EQ(g.ids.size(), 8u) << c.name;
  }
  const std::string body = HttpGet(server_->metrics_address(), "/metrics");
  for (const char* method : {"bitsandbytes", "hqq", "quanto", "eetq", "torchao"}) {
    EXPECT_NE(body.find(std::string("quant_method=\"") + method + "\""), std::string::npos)
        << method;
  }
  for (const Case& c : cases) Unload(c.name);
}

// Compare and routes on real models: a copy agrees exactly, quantized variants diverge in the
// expected order, the baseline's perplexity is Score's, and a route serves its variants.
TEST_F(ServerIntegrationTest, CompareRanksQuantizationsAndRoutesServeVariants) {
  ASSERT_TRUE(LoadFull("tl-copy", "tiny-llama", "float32").ok());
  ASSERT_TRUE(LoadFull("tl-c-int8", "tiny-llama", "float32",
                       R"({"quant_method": "quanto", "weights": "int8"})").ok());
  ASSERT_TRUE(LoadFull("tl-c-nf4", "tiny-llama", "float32",
                       R"({"load_in_4bit": true, "bnb_4bit_quant_type": "nf4"})").ok());
  const std::string text =
      "In the beginning God created the heaven and the earth. And the earth was without form, "
      "and void; and darkness was upon the face of the deep.";
  v1::CompareRequest request;
  request.set_baseline("tiny-llama");
  for (const char* c : {"tl-copy", "tl-c-int8", "tl-c-nf4"}) request.add_candidates(c);
  request.add_texts(text);
  request.set_continuation_tokens(8);
  request.set_speed_new_tokens(4);
  v1::CompareReport report;
  const grpc::Status compared = Compare(request, &report);
  ASSERT_TRUE(compared.ok()) << compared.error_message();
  ASSERT_EQ(report.variants_size(), 4);
  const v1::CompareVariant& copy = report.variants(1);
  EXPECT_LT(copy.kl_mean(), 1e-6);
  EXPECT_DOUBLE_EQ(copy.same_top1(), 1.0);
  EXPECT_NEAR(copy.ppl_ratio(), 1.0, 1e-6);
  EXPECT_EQ(copy.greedy_agreement_tokens(), 8);
  const v1::CompareVariant& int8 = report.variants(2);
  const v1::CompareVariant& nf4 = report.variants(3);
  EXPECT_GT(int8.kl_mean(), 0.0);
  EXPECT_GT(nf4.kl_mean(), int8.kl_mean()) << "4-bit should diverge more than 8-bit";
  EXPECT_GE(int8.same_top1(), nf4.same_top1());
  EXPECT_LT(nf4.memory_footprint_bytes(), copy.memory_footprint_bytes());
  for (const v1::CompareVariant& v : report.variants()) {
    EXPECT_GT(v.decode_tokens_per_second(), 0) << v.model();
    EXPECT_EQ(v.kl_per_token_size(), report.tokens()) << v.model();
  }
  // The baseline's perplexity is Score's on the same text.
  grpc::ClientContext score_ctx;
  v1::ScoreRequest score;
  score.set_model("tiny-llama");
  score.set_text(text);
  v1::ScoreResponse scored;
  ASSERT_TRUE(inference_->Score(&score_ctx, score, &scored).ok());
  EXPECT_NEAR(report.variants(0).perplexity(), scored.perplexity(), 1e-4 * scored.perplexity());
  EXPECT_EQ(report.tokens(), scored.logprobs_size());

  // A route over two of them: keyless requests alternate 1:1, a key sticks.
  v1::SetRouteRequest set;
  set.mutable_route()->set_name("tl-route");
  for (const char* m : {"tl-copy", "tl-c-int8"}) {
    v1::RouteVariant* v = set.mutable_route()->add_variants();
    v->set_model(m);
    v->set_weight(1);
  }
  v1::Route stored;
  grpc::ClientContext set_ctx;
  ASSERT_TRUE(models_->SetRoute(&set_ctx, set, &stored).ok());
  std::map<std::string, int> served;
  for (int i = 0; i < 4; ++i) ++served[Greedy("tl-route", 2).finish.served_by()];
  EXPECT_EQ(served["tl-copy"], 2);
  EXPECT_EQ(served["tl-c-int8"], 2);
  v1::GenerateRequest keyed;
  keyed.set_model("tl-route");
  keyed.set_prompt("In the beginning");
  keyed.set_max_new_tokens(2);
  keyed.set_routing_key("user-7");
  const std::string first = Generate(keyed).finish.served_by();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Generate(keyed).finish.served_by(), first);
  grpc::ClientContext del_ctx;
  v1::DeleteRouteRequest del;
  del.set_name("tl-route");
  v1::DeleteRouteResponse deleted;
  EXPECT_TRUE(models_->DeleteRoute(&del_ctx, del, &deleted).ok());
  for (const char* m : {"tl-copy", "tl-c-int8", "tl-c-nf4"}) Unload(m);
}

// Compare's figures against an independent computation (tests/fixtures/
// make_compare_reference.py: transformers with bitsandbytes and optimum-quanto on the same
// tokens, float64 statistics).
TEST_F(ServerIntegrationTest, CompareMatchesTheLibrariesOnTheSameTokens) {
  const nlohmann::json ref = ReadJsonFile(FixturePath("compare") + "/reference.json");
  ASSERT_TRUE(LoadFull("kjv-cmp", "compare/kjv-llama", "float32").ok());
  v1::CompareRequest request;
  request.set_baseline("kjv-cmp");
  for (const auto& [name, variant] : ref["variants"].items()) {
    const LoadResult r =
        LoadFull(name, "compare/kjv-llama", "float32", variant["quantization_config"].dump());
    ASSERT_TRUE(r.ok()) << name << ": " << r.status.error_message();
    request.add_candidates(name);
  }
  request.add_texts(ref["text"].get<std::string>());
  request.set_max_tokens(ref["max_tokens"].get<int32_t>());
  request.set_continuation_tokens(4);
  request.set_speed_new_tokens(2);
  v1::CompareReport report;
  const grpc::Status compared = Compare(request, &report);
  ASSERT_TRUE(compared.ok()) << compared.error_message();
  EXPECT_EQ(report.tokens(), ref["max_tokens"].get<int64_t>() - 1);
  EXPECT_NEAR(report.variants(0).perplexity(), ref["baseline_perplexity"].get<double>(),
              1e-4 * ref["baseline_perplexity"].get<double>());
  for (int i = 1; i < report.variants_size(); ++i) {
    const v1::CompareVariant& got = report.variants(i);
    const nlohmann::json& want = ref["variants"][got.model()];
    SCOPED_TRACE(got.model());
    // Means within 1e-3 relative (or 1e-7 absolute for int8's ~1e-5 KL); the max and the
    // percentiles, single positions, within 1e-2; top-1 within one position in 511.
    const auto near = [](double g, double w, double rel, double abs) {
      EXPECT_NEAR(g, w, rel * std::abs(w) + abs);
    };
    near(got.kl_mean(), want["kl_mean"], 1e-3, 1e-7);
    near(got.kl_median(), want["kl_median"], 1e-2, 1e-7);
    near(got.kl_p99(), want["kl_p99"], 1e-2, 1e-7);
    near(got.kl_max(), want["kl_max"], 1e-2, 1e-7);
    near(got.ppl_ratio(), want["ppl_ratio"], 1e-5, 0);
    near(got.perplexity(), want["perplexity"], 1e-4, 0);
    near(got.dp_mean(), want["dp_mean"], 1e-3, 1e-7);
    near(got.dp_rms(), want["dp_rms"], 1e-3, 1e-7);
    near(got.same_top1(), want["same_top1"], 0, 1.0 / 511 + 1e-9);
  }
  for (const auto& [name, variant] : ref["variants"].items()) Unload(name);
  Unload("kjv-cmp");
}

// SaveModel writes a quantized model so the next load streams its packed tensors: the
// reloaded model is the same model (same greedy tokens and logprobs, same method and
// footprint) and loads without quantizing.
TEST_F(ServerIntegrationTest, SaveModelWritesAReloadableCheckpointAndRefusesBadRequests) {
  auto save = [](const std::string& name, const std::string& path,
                 const std::string& max_shard_size, v1::SaveModelResponse* resp) {
    grpc::ClientContext ctx;
    v1::SaveModelRequest req;
    req.set_name(name);
    req.set_path(path);
    req.set_max_shard_size(max_shard_size);
    return models_->SaveModel(&ctx, req, resp);
  };
  const fs::path scratch = fs::path(FixturesDir()) / "integration-scratch";
  for (const char* d : {"saved-nf4", "saved-float-sharded", "saved-quanto"}) {
    fs::remove_all(scratch / d);
  }

  LoadResult quantized = LoadFull("tl-save-nf4", "tiny-llama", "float32",
                                  R"({"load_in_4bit": true, "bnb_4bit_quant_type": "nf4"})");
  ASSERT_TRUE(quantized.ok()) << quantized.status.error_message();
  GenerateResult before = Greedy("tl-save-nf4", 16);
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();

  v1::SaveModelResponse resp;
  grpc::Status s = save("tl-save-nf4", "integration-scratch/saved-nf4", "", &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.path(), "integration-scratch/saved-nf4");
  std::vector<std::string> files(resp.files().begin(), resp.files().end());
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) {
    EXPECT_NE(std::find(files.begin(), files.end(), f), files.end()) << f;
  }
  EXPECT_GT(resp.bytes_written(), 0);
  EXPECT_LT(resp.bytes_written(), loaded_.at("tiny-llama").memory_footprint_bytes());

  LoadResult reloaded = LoadFull("tl-saved-nf4", "integration-scratch/saved-nf4", "float32");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status.error_message();
  EXPECT_EQ(reloaded.info.quant_method(), "bitsandbytes");
  EXPECT_EQ(reloaded.info.memory_footprint_bytes(), quantized.info.memory_footprint_bytes());
  GenerateResult after = Greedy("tl-saved-nf4", 16);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.ids, before.ids);
  EXPECT_EQ(after.logprobs, before.logprobs);
  std::cout << "quantize at load " << quantized.info.load_seconds() << " s, reload saved "
            << reloaded.info.load_seconds() << " s\n";

  // Sharded float save: several shards plus the index; reloads to the same greedy tokens.
  s = save("tiny-llama", "integration-scratch/saved-float-sharded", "200KB", &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(std::find(resp.files().begin(), resp.files().end(), "model.safetensors.index.json"),
            resp.files().end());
  LoadResult sharded = LoadFull("tl-saved-sharded", "integration-scratch/saved-float-sharded",
                                "float32");
  ASSERT_TRUE(sharded.ok()) << sharded.status.error_message();
  EXPECT_EQ(Greedy("tl-saved-sharded", 16).ids, Greedy("tiny-llama", 16).ids);

  // Refusals, each with its code; nothing is written and the server keeps serving.
  EXPECT_EQ(save("tl-save-nf4", "integration-scratch/saved-nf4", "", &resp).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(save("tl-save-nf4", "../outside", "", &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(save("no-such-model", "integration-scratch/x", "", &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(save("tl-save-nf4", "integration-scratch/x", "lots", &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  LoadResult quanto = LoadFull("tl-save-quanto", "tiny-llama", "float32",
                               R"({"quant_method": "quanto", "weights": "int8"})");
  ASSERT_TRUE(quanto.ok()) << quanto.status.error_message();
  // quanto, which transformers cannot save, is written in optimum-quanto's own layout and
  // reloads (through its quanto_qmap.json) to the same greedy tokens.
  s = save("tl-save-quanto", "integration-scratch/saved-quanto", "", &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(fs::exists(scratch / "saved-quanto" / "quanto_qmap.json"));
  LoadResult saved_quanto =
      LoadFull("tl-saved-quanto", "integration-scratch/saved-quanto", "float32");
  ASSERT_TRUE(saved_quanto.ok()) << saved_quanto.status.error_message();
  EXPECT_EQ(Greedy("tl-saved-quanto", 16).ids, Greedy("tl-save-quanto", 16).ids);
  EXPECT_FALSE(fs::exists(scratch / "x"));
  EXPECT_TRUE(Greedy("tiny-llama", 4).status.ok());

  // A pre-quantized checkpoint with a request naming another method is refused.
  LoadResult conflict = LoadFull("tl-conflict", "integration-scratch/saved-nf4", "float32",
                                 R"({"quant_method": "hqq", "nbits": 4})");
  EXPECT_EQ(conflict.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(conflict.status.error_message().find("conflicts"), std::string::npos);

  for (const char* m : {"tl-save-nf4", "tl-saved-nf4", "tl-saved-sharded", "tl-save-quanto"}) {
    Unload(m);
  }
}

TEST_F(ServerIntegrationTest, BadQuantizationConfigsArePreciseAndServerKeepsServing) {
  struct Case {
    const char* config;
    grpc::StatusCode code;
    const char* mentions;
  };
  const Case cases[] = {
      {R"({"quant_method": "bitsandbytes"})", grpc::StatusCode::INVALID_ARGUMENT, "load_in"},
      {R"({"load_in_8bit": true, "llm_int8_threshold": 6})", grpc::StatusCode::INVALID_ARGUMENT,
       "llm_int8_threshold"},
      {R"({"load_in_4bit": true, "bnb_4bit_quant_type": "nf5"})",
       grpc::StatusCode::INVALID_ARGUMENT, "bnb_4bit_quant_type"},
      {R"({"quant_method": "hqq", "nbits": 4, "axis": 2})", grpc::StatusCode::INVALID_ARGUMENT,
       "axis"},
      {R"({"quant_method": "quanto", "weights": "int3"})", grpc::StatusCode::INVALID_ARGUMENT,
       "weights"},
      {R"({"quant_method": "eetq", "weights": "int4"})", grpc::StatusCode::INVALID_ARGUMENT,
       "weights"},
      {R"({"quant_method": "gptq", "bits": 5})", grpc::StatusCode::INVALID_ARGUMENT, "bits"},
      {R"({"quant_method": "torchao", "quant_type": "int3_magic"})",
       grpc::StatusCode::INVALID_ARGUMENT, "quant_type"},
      // Calibration-only methods cannot quantize an unquantized checkpoint at load.
      {R"({"quant_method": "gptq", "bits": 4})", grpc::StatusCode::FAILED_PRECONDITION, "gptq"},
      {R"({"quant_method": "awq"})", grpc::StatusCode::FAILED_PRECONDITION, "awq"},
      {R"({"quant_method": "aqlm"})", grpc::StatusCode::FAILED_PRECONDITION, "aqlm"},
      {R"({"quant_method": "compressed-tensors"})", grpc::StatusCode::FAILED_PRECONDITION,
       "compressed-tensors"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::string name = "bad-config-" + std::to_string(i++);
    LoadResult r = LoadFull(name, "tiny-llama", "float32", c.config);
    EXPECT_EQ(r.status.error_code(), c.code) << c.config << ": " << r.status.error_message();
    std::string message = r.status.error_message();
    std::transform(message.begin(), message.end(), message.begin(), ::tolower);
    EXPECT_NE(message.find(c.mentions), std::string::npos) << c.config << ": " << message;
    Unload(name);
  }
  GenerateResult g = Greedy("tiny-llama", 4);
  EXPECT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.ids.size(), 4u);
}

}  // namespace
}  // namespace quantserve::testing

// quantserve-cli's verbs against a real Server with fake models.

#include "cli/cli.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/server/fake_model.h"
#include "tests/testing/test_pki.h"

namespace quantserve::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Result {
  int code;
  std::string out;
  std::string err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("cli_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "tiny");
    fs::create_directories(root_ / "embed");
    fs::create_directories(root_ / "broken");
    stats_ = std::make_shared<server::testing::FakeStats>();
    metrics_ = server::ServerMetrics::CreateDefault();
    StartServer([](server::Server::Options&) {});
  }
  // (Re)starts the server on 127.0.0.1:0 with the fake models; `configure` adds options.
  void StartServer(const std::function<void(server::Server::Options&)>& configure) {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
    server::Server::Options options;
    options.listen_address = "127.0.0.1:0";
    options.model_root = root_.string();
    options.loader = server::testing::MakeFakeLoader(stats_);
    options.metrics = metrics_.get();
    configure(options);
    auto created = server::Server::Create(options);
    ASSERT_TRUE(created.ok()) << created.status();
    server_ = *std::move(created);
  }
  void TearDown() override {
    server_->Shutdown(absl::Seconds(1));
    server_.reset();
    fs::remove_all(root_);
  }

  Result Run(std::vector<std::string> args, bool with_server = true) {
    if (with_server) {
      args.insert(args.begin(), "--server=" + server_->address());
    }
    std::ostringstream out, err;
    int code = RunCli(args, {.out = out, .err = err, .interactive = false});
    return {code, out.str(), err.str()};
  }

  fs::path root_;
  std::shared_ptr<server::testing::FakeStats> stats_;
  std::unique_ptr<server::ServerMetrics> metrics_;
  std::unique_ptr<server::Server> server_;
};

TEST_F(CliTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Run({}, false).code, 2);
  EXPECT_EQ(Run({"frobnicate"}).code, 2);
  EXPECT_EQ(Run({"list", "--bogus"}).code, 2);
  Result r = Run({"list", "--max_new_tokens=3"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--max_new_tokens does not apply to 'list'"));
  r = Run({"generate", "tiny"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("usage: quantserve-cli generate MODEL PROMPT"));
  EXPECT_EQ(Run({"generate", "tiny", "hi", "--max_new_tokens=lots"}).code, 2);
}

TEST_F(CliTest, HelpOverviewAndPerVerb) {
  Result r = Run({"--help"}, false);
  EXPECT_EQ(r.code, 0);
  for (const char* verb : {"load", "unload", "list", "get", "generate", "embed", "score",
                           "tokenize", "--server", "--json", "Exit codes"}) {
    EXPECT_THAT(r.out, HasSubstr(verb));
  }
  r = Run({"generate", "--help"}, false);
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, AllOf(StartsWith("Usage: quantserve-cli [global flags] generate MODEL PROMPT"),
                           HasSubstr("--max_new_tokens=N"), HasSubstr("--stop=TEXT"),
                           HasSubstr("(repeatable)"), HasSubstr("--server=HOST:PORT")));
  EXPECT_EQ(Run({"help", "load"}, false).code, 0);
}

TEST_F(CliTest, LoadListGetGenerateUnload) {
  Result r = Run({"load", "tiny", "tiny", "--quantization_config={\"quant_method\":\"eetq\"}",
                  "--dtype=float16"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, AllOf(HasSubstr("load: config"), HasSubstr("load: weights")));
  EXPECT_THAT(r.out, StartsWith("loaded tiny: FakeForCausalLM eetq float16 on cpu, 4.0 MB"));

  r = Run({"list"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], StartsWith("NAME  STATE  ARCH"));
  EXPECT_THAT(lines[1], StartsWith("tiny  READY  FakeForCausalLM"));
  EXPECT_EQ(lines[0].find("QUANT_METHOD"), lines[1].find("eetq"));

  r = Run({"get", "tiny"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("quant_method:"), HasSubstr("eetq"), HasSubstr("READY")));

  r = Run({"generate", "tiny", "hello", "--max_new_tokens=3", "--stop", "x", "--stop", "y",
           "--logprobs=1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "t0 t1 t2 \n");
  EXPECT_THAT(r.err, AllOf(HasSubstr("finish=length"), HasSubstr("completion_tokens=3"),
                           HasSubstr("served_by=tiny"), HasSubstr("[logprobs 1005:-0.500")));

  r = Run({"--json", "generate", "tiny", "hello", "--max_new_tokens=2"});
  ASSERT_EQ(r.code, 0) << r.err;
  lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[0], HasSubstr("\"token_ids\":[1005]"));
  EXPECT_THAT(lines[2], AllOf(HasSubstr("\"finish\""), HasSubstr("\"reason\":\"LENGTH\"")));

  r = Run({"unload", "tiny"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("unloaded tiny (was READY"));
}

TEST_F(CliTest, RoutesSetListAndDelete) {
  ASSERT_EQ(Run({"load", "tiny", "tiny"}).code, 0);
  Result r = Run({"route", "set", "chat", "tiny=3", "later", "--mirror=shadow",
                  "--mirror_percent=10"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("chat"), HasSubstr("tiny=3, later=1 (down)"),
                           HasSubstr("shadow 10% (down)")));
  r = Run({"routes"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(StartsWith("ROUTE"), HasSubstr("tiny=3")));
  r = Run({"generate", "chat", "hello", "--max_new_tokens=1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("served_by=tiny"));
  EXPECT_EQ(Run({"route", "set", "chat", "tiny=x"}).code, 2);
  EXPECT_EQ(Run({"route", "frob", "chat"}).code, 2);
  EXPECT_EQ(Run({"route", "delete", "chat"}).code, 0);
  r = Run({"route", "delete", "chat"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

TEST_F(CliTest, LoadSendsCalibrationTextsOnePerLine) {
  const fs::path file = root_ / "calibration.txt";
  std::ofstream(file) << "In the beginning\n\nAnd God said\n";
  Result r = Run({"load", "q", "tiny", "--calibration_texts=@" + file.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  {
    absl::MutexLock lock(&stats_->mu);
    EXPECT_EQ(stats_->last_calibration_texts,
              (std::vector<std::string>{"In the beginning", "And God said"}));
  }
  ASSERT_EQ(Run({"load", "q2", "tiny", "--calibration_texts=one text"}).code, 0);
  absl::MutexLock lock(&stats_->mu);
  EXPECT_EQ(stats_->last_calibration_texts, (std::vector<std::string>{"one text"}));
}

TEST_F(CliTest, EmbedScoreTokenize) {
  ASSERT_EQ(Run({"load", "emb", "embed"}).code, 0);
  Result r = Run({"embed", "emb", "abc", "hello", "--normalize=false"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("[0] dim=3"), HasSubstr("[1] dim=3"), HasSubstr("5.0000")));
  r = Run({"--json", "embed", "emb", "abc"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"embeddings\""));
  r = Run({"score", "emb", "abcd"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("perplexity=2.7183 tokens=4"));
  r = Run({"tokenize", "emb", "hi"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(StartsWith("3 tokens"), HasSubstr("\"<s>\"")));
  r = Run({"tokenize", "emb", "hi", "--add_special_tokens=false"});
  EXPECT_THAT(r.out, StartsWith("2 tokens"));
}

TEST_F(CliTest, RpcErrorsExitOneWithCodeAndMessage) {
  Result r = Run({"get", "ghost"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: NOT_FOUND: model 'ghost' not found"));
  r = Run({"load", "bad", "broken"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: DATA_LOSS:"));
  r = Run({"list"});
  EXPECT_THAT(r.out, HasSubstr("bad   FAILED"));
  // A model's health: NOT_SERVING once failed (exit 1), NOT_FOUND when never loaded.
  r = Run({"health", "bad"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "NOT_SERVING\n");
  r = Run({"health", "ghost"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  r = Run({"generate", "ghost", "hi", "--temperature=-1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: sampling.temperature"));
  r = Run({"--server=127.0.0.1:1", "--timeout_seconds=2", "list"}, false);
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: "));
}

// --token_file / $QUANTSERVE_TOKEN send "authorization: Bearer <token>" to a server that
// requires one.
TEST_F(CliTest, TokenFileAndEnvironmentAuthorize) {
  std::ofstream(root_ / "admin.tokens") << "cli-secret\n";
  std::ofstream(root_ / "client.token") << "# my token\ncli-secret\n";
  std::ofstream(root_ / "empty.token") << "# nothing\n";
  StartServer([&](server::Server::Options& o) {
    o.admin_token_file = (root_ / "admin.tokens").string();
  });

  Result r = Run({"load", "tiny", "tiny"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  r = Run({"health"});  // health needs no token
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");
  r = Run({"--token_file=" + (root_ / "client.token").string(), "load", "tiny", "tiny"});
  EXPECT_EQ(r.code, 0) << r.err;
  r = Run({"--token_file=" + (root_ / "empty.token").string(), "list"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--token_file: no token"));
  ::setenv("QUANTSERVE_TOKEN", "wrong", 1);
  r = Run({"unload", "tiny"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED"));
  ::setenv("QUANTSERVE_TOKEN", "cli-secret", 1);
  r = Run({"unload", "tiny"});
  EXPECT_EQ(r.code, 0) << r.err;
  ::unsetenv("QUANTSERVE_TOKEN");
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// compare prints the table and, with --html, writes a self-contained page: one table row per
// variant, one KL curve and one scatter circle per candidate, names escaped.
TEST_F(CliTest, CompareTableAndHtmlReport) {
  ASSERT_EQ(Run({"load", "base", "tiny"}).code, 0);
  ASSERT_EQ(Run({"load", "copy", "tiny"}).code, 0);
  ASSERT_EQ(Run({"load", "q", "tiny",
                 R"(--quantization_config={"quant_method":"bitsandbytes","load_in_4bit":true})"})
                .code,
            0);
  const std::string html = (root_ / "report.html").string();
  Result r = Run({"compare", "base", "copy", "q", "--text=In the beginning <b>&",
                  "--continuation_tokens=4", "--html=" + html});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("VARIANT"));
  EXPECT_THAT(r.err, HasSubstr("wrote " + html));
  std::ifstream in(html);
  const std::string page((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(page, StartsWith("<!DOCTYPE html>"));
  EXPECT_THAT(page, HasSubstr("</html>"));
  EXPECT_EQ(Count(page, "<tr class='variant'>"), 3u);
  EXPECT_EQ(Count(page, "<polyline class='kl'"), 2u);
  EXPECT_EQ(Count(page, "<circle class='variant'"), 2u);
  EXPECT_EQ(Count(page, "<svg"), Count(page, "</svg>"));
  EXPECT_EQ(Count(page, "<svg"), 2u);
  EXPECT_THAT(page, HasSubstr(">bitsandbytes<"));
  EXPECT_EQ(page.find("<b>"), std::string::npos);  // nothing from the request is unescaped
  EXPECT_EQ(page.find("nan"), std::string::npos);
  // An unwritable path is a usage error after the report was printed.
  r = Run({"compare", "base", "copy", "--text=In the beginning",
           "--html=" + (root_ / "missing-dir" / "x.html").string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("cannot write"));
}

// --tls_ca_file speaks TLS to a TLS server (a plaintext client is refused); mutual TLS with
// --tls_cert_file/--tls_key_file; unreadable or half-given files are usage errors.
TEST_F(CliTest, TlsFlags) {
  quantserve::testing::TestPki pki;
  ASSERT_TRUE(quantserve::testing::MakeTestPki(root_.string(), &pki))
      << "openssl failed; see " << root_.string() << "/openssl.log";
  StartServer([&](server::Server::Options& o) {
    o.tls = {.cert_file = pki.server_crt(),
             .key_file = pki.server_key(),
             .client_ca_file = pki.ca_crt()};
  });

  const std::string ca = "--tls_ca_file=" + pki.ca_crt();
  Result r = Run({"--timeout_seconds=5", "list"});
  EXPECT_EQ(r.code, 1);
  r = Run({"--timeout_seconds=5", ca, "list"});  // no client certificate
  EXPECT_EQ(r.code, 1);
  r = Run({"--timeout_seconds=5", ca, "--tls_cert_file=" + pki.client_crt(),
           "--tls_key_file=" + pki.client_key(), "list"});
  EXPECT_EQ(r.code, 0) << r.err;
  r = Run({"--timeout_seconds=5", ca, "--tls_cert_file=" + pki.client_crt(),
           "--tls_key_file=" + pki.client_key(), "health"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");
  r = Run({ca, "--tls_cert_file=" + pki.client_crt(), "list"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("go together"));
  r = Run({"--tls_ca_file=" + (root_ / "nope.crt").string(), "list"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tls_ca_file: cannot read"));
}

}  // namespace
}  // namespace quantserve::cli

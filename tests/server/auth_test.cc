#include "server/auth.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "quantserve/v1/inference_service.grpc.pb.h"
#include "quantserve/v1/model_service.grpc.pb.h"

namespace quantserve::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// Every RPC the services define has a scope: a new RPC without one fails here, not open in
// production.
TEST(AuthTest, EveryRpcHasAScope) {
  for (const char* name :
       {v1::ModelService::service_full_name(), v1::InferenceService::service_full_name()}) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    ASSERT_GT(service->method_count(), 4);
    for (int i = 0; i < service->method_count(); ++i) {
      EXPECT_TRUE(ScopeOfRpc(service->method(i)->name()).ok()) << service->method(i)->name();
    }
  }
  EXPECT_EQ(*ScopeOfRpc("LoadModel"), RpcScope::kAdmin);
  EXPECT_EQ(*ScopeOfRpc("SetRoute"), RpcScope::kAdmin);
  EXPECT_EQ(*ScopeOfRpc("Generate"), RpcScope::kInference);
  EXPECT_EQ(ScopeOfRpc("Nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(AuthTest, TokenFilesSkipCommentsAndRefuseBadTokens) {
  auto tokens = ParseTokenFile("# comment\n\n  alpha  \r\nbeta\n");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, (std::vector<std::string>{"alpha", "beta"}));
  EXPECT_EQ(ParseTokenFile("# only a comment\n").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status inner = ParseTokenFile("good\nsecret with-space\n").status();
  EXPECT_EQ(inner.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inner.message()), HasSubstr("line 2"));
  EXPECT_THAT(std::string(inner.message()), Not(HasSubstr("secret")));  // never echoed
}

TEST(AuthTest, ConstantTimeContains) {
  const std::vector<std::string> set = {"alpha", "beta-longer"};
  EXPECT_TRUE(ContainsTokenConstantTime(set, "alpha"));
  EXPECT_TRUE(ContainsTokenConstantTime(set, "beta-longer"));
  EXPECT_FALSE(ContainsTokenConstantTime(set, "alph"));
  EXPECT_FALSE(ContainsTokenConstantTime(set, "alphaa"));
  EXPECT_FALSE(ContainsTokenConstantTime(set, ""));
  EXPECT_FALSE(ContainsTokenConstantTime({}, "alpha"));
  EXPECT_FALSE(ContainsTokenConstantTime(set, std::string("alpha\0", 6)));
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("auth_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::trunc) << text;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

TEST_F(AuthenticatorTest, ScopesAndCodes) {
  auto auth = Authenticator::Create({.admin_token_file = Write("a", "admin\n"),
                                     .inference_token_file = Write("i", "user\n")});
  ASSERT_TRUE(auth.ok()) << auth.status();
  Authenticator& a = **auth;
  EXPECT_EQ(a.Check("LoadModel", "").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(a.Check("LoadModel", "admin").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(a.Check("LoadModel", "Bearer ").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(a.Check("LoadModel", "Bearer user").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(a.Check("LoadModel", "Bearer admin").ok());
  EXPECT_TRUE(a.Check("LoadModel", "bearer admin").ok());  // the scheme is case-insensitive
  EXPECT_EQ(a.Check("LoadModel", "Bearer ADMIN").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(a.Check("Generate", "Bearer user").ok());
  EXPECT_TRUE(a.Check("Generate", "Bearer admin").ok());
  EXPECT_EQ(a.Check("Generate", "Bearer nobody").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(a.Check("Unknown", "Bearer admin").code(), absl::StatusCode::kInternal);
}

TEST_F(AuthenticatorTest, OnlyConfiguredScopesAreGuarded) {
  auto admin_only = Authenticator::Create({.admin_token_file = Write("a", "admin\n")});
  ASSERT_TRUE(admin_only.ok());
  EXPECT_TRUE((*admin_only)->Check("Generate", "").ok());
  EXPECT_EQ((*admin_only)->Check("SaveModel", "").code(), absl::StatusCode::kUnauthenticated);
  auto open = Authenticator::Create({});
  ASSERT_TRUE(open.ok());
  EXPECT_TRUE((*open)->Check("LoadModel", "").ok());
  EXPECT_TRUE(Authorize(nullptr, nullptr, "LoadModel").ok());
}

TEST_F(AuthenticatorTest, MissingOrEmptyFileRefusesToStart) {
  EXPECT_EQ(Authenticator::Create({.admin_token_file = (dir_ / "none").string()}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Authenticator::Create({.inference_token_file = Write("e", "\n# nothing\n")})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Rotation: a rewritten file takes effect at the next check; a file that disappears or turns
// bad keeps the previous tokens (a Secret being swapped is briefly absent).
TEST_F(AuthenticatorTest, ReloadsOnChangeAndKeepsTokensOnFailure) {
  const std::string path = Write("a", "first\n");
  auto auth = Authenticator::Create({.admin_token_file = path, .reload_interval = absl::ZeroDuration()});
  ASSERT_TRUE(auth.ok());
  Authenticator& a = **auth;
  EXPECT_TRUE(a.Check("UnloadModel", "Bearer first").ok());
  Write("a", "second-token\n");
  EXPECT_EQ(a.Check("UnloadModel", "Bearer first").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(a.Check("UnloadModel", "Bearer second-token").ok());
  fs::remove(path);
  EXPECT_TRUE(a.Check("UnloadModel", "Bearer second-token").ok());
  Write("a", "#\n");
  EXPECT_TRUE(a.Check("UnloadModel", "Bearer second-token").ok());
  Write("a", "third\n");
  EXPECT_TRUE(a.Check("UnloadModel", "Bearer third").ok());
}

}  // namespace
}  // namespace quantserve::server

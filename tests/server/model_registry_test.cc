#include "server/model_registry.h"

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/fake_model.h"

namespace quantserve::server {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using testing::FakeStats;
using ::testing::HasSubstr;
using testing::MakeFakeLoader;
using ::testing::Pair;

class ModelRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("registry_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    for (const char* dir : {"tiny", "broken", "slow"}) {
      fs::create_directories(root_ / dir);
    }
    stats_ = std::make_shared<FakeStats>();
    metrics_ = ServerMetrics::CreateDefault();
    auto registry = ModelRegistry::Create({
        .model_root = root_.string(),
        .loader = MakeFakeLoader(stats_),
        .default_drain_timeout = absl::Seconds(5),
        .cancel_grace = absl::Milliseconds(300),
        .metrics = metrics_.get(),
        .on_serving_changed =
            [this](const std::string& name, bool serving) {
              absl::MutexLock lock(&health_mu_);
              health_.emplace_back(name, serving);
            },
    });
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
  }
  void TearDown() override {
    stats_->Unblock();
    stats_->ReleaseLoads();
    registry_.reset();
    fs::remove_all(root_);
  }

  std::vector<std::pair<std::string, bool>> health() {
    absl::MutexLock lock(&health_mu_);
    return health_;
  }

  fs::path root_;
  std::shared_ptr<FakeStats> stats_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<ModelRegistry> registry_;
  absl::Mutex health_mu_;
  std::vector<std::pair<std::string, bool>> health_ ABSL_GUARDED_BY(health_mu_);
};

TEST_F(ModelRegistryTest, CreateNeedsLoaderAndExistingRoot) {
  EXPECT_EQ(ModelRegistry::Create({.model_root = root_.string()}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelRegistry::Create(
                {.model_root = (root_ / "nope").string(), .loader = MakeFakeLoader(stats_)})
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ModelRegistryTest, LoadReportsProgressThenReady) {
  std::vector<std::string> phases;
  auto loaded =
      registry_->Load({.name = "m", .path = "tiny"}, [&](const engine::LoadProgress& p, double) {
        if (phases.empty() || phases.back() != p.phase) {
          phases.push_back(p.phase);
        }
      });
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->state, ModelState::kReady);
  EXPECT_EQ(loaded->labels.quant_method, "none");
  ASSERT_TRUE(loaded->description.has_value());
  EXPECT_EQ(loaded->description->architecture, "FakeForCausalLM");
  EXPECT_THAT(phases,
              ElementsAre("config", "quantizer", "skeleton", "weights", "post_process", "ready"));
  EXPECT_THAT(health(), ElementsAre(Pair("m", false), Pair("m", true)));
  auto handle = registry_->Acquire("m");
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(handle->name(), "m");
  EXPECT_EQ(registry_->Get("m")->in_flight, 1);
}

TEST_F(ModelRegistryTest, DuplicateNamesAndUnknownNames) {
  ASSERT_TRUE(registry_->Load({.name = "m", .path = "tiny"}).ok());
  EXPECT_EQ(registry_->Load({.name = "m", .path = "tiny"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry_->Acquire("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Get("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Unload("x").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ModelRegistryTest, FailedLoadKeepsReasonUntilUnloaded) {
  auto loaded = registry_->Load({.name = "bad", .path = "broken"});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  auto snapshot = registry_->Get("bad");
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(snapshot->state, ModelState::kFailed);
  EXPECT_THAT(snapshot->reason, HasSubstr("DATA_LOSS"));
  EXPECT_THAT(snapshot->reason, HasSubstr("lm_head.weight"));
  auto acquired = registry_->Acquire("bad");
  EXPECT_EQ(acquired.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(acquired.status().message()), HasSubstr("FAILED"));
  EXPECT_EQ(registry_->Load({.name = "bad", .path = "tiny"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  auto unloaded = registry_->Unload("bad");
  ASSERT_TRUE(unloaded.ok()) << unloaded.status();
  EXPECT_EQ(unloaded->previous_state, ModelState::kFailed);
  EXPECT_TRUE(registry_->Load({.name = "bad", .path = "tiny"}).ok());
}

TEST_F(ModelRegistryTest, LoadingModelIsUnavailableAndCannotBeUnloaded) {
  absl::Notification done;
  ASSERT_TRUE(registry_
                  ->StartLoad({.name = "s", .path = "slow"}, nullptr,
                              [&](absl::StatusOr<ModelSnapshot>) { done.Notify(); })
                  .ok());
  // Wait until it is in the weights phase.
  while (registry_->Get("s")->reason.find("weights") == std::string::npos) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  auto acquired = registry_->Acquire("s");
  EXPECT_EQ(acquired.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(acquired.status().message()), HasSubstr("LOADING"));
  EXPECT_EQ(registry_->Unload("s").status().code(), absl::StatusCode::kFailedPrecondition);
  stats_->ReleaseLoads();
  done.WaitForNotification();
  EXPECT_EQ(registry_->Get("s")->state, ModelState::kReady);
}

TEST_F(ModelRegistryTest, UnloadWaitsForHandlesThenShutsDown) {
  ASSERT_TRUE(registry_->Load({.name = "m", .path = "tiny"}).ok());
  auto handle = std::make_unique<ModelHandle>(*registry_->Acquire("m"));
  absl::Notification unloaded;
  absl::StatusOr<UnloadResult> result;
  ASSERT_TRUE(registry_
                  ->StartUnload("m", absl::Seconds(5),
                                [&](absl::StatusOr<UnloadResult> r) {
                                  result = std::move(r);
                                  unloaded.Notify();
                                })
                  .ok());
  EXPECT_EQ(registry_->Get("m")->state, ModelState::kUnloading);
  EXPECT_EQ(registry_->Acquire("m").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(registry_->Unload("m").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(unloaded.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  EXPECT_EQ(stats_->shutdowns.load(), 0);
  handle.reset();
  unloaded.WaitForNotification();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(stats_->shutdowns.load(), 1);
  EXPECT_EQ(registry_->Get("m").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(health().back(), std::make_pair(std::string("m"), false));
}

TEST_F(ModelRegistryTest, DrainTimeoutRunsCancellers) {
  ASSERT_TRUE(registry_->Load({.name = "m", .path = "tiny"}).ok());
  auto handle = std::make_shared<std::optional<ModelHandle>>(*registry_->Acquire("m"));
  std::atomic<int> cancelled{0};
  (*handle)->SetCanceller([&cancelled, handle] {
    ++cancelled;
    handle->reset();  // a cancelled request ends promptly
  });
  auto result = registry_->Unload("m", absl::Milliseconds(20));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(cancelled.load(), 1);
  EXPECT_EQ(stats_->shutdowns.load(), 1);
}

TEST_F(ModelRegistryTest, StuckRequestGivesDeadlineExceededAndIsFreedLater) {
  ASSERT_TRUE(registry_->Load({.name = "m", .path = "tiny"}).ok());
  auto handle = std::make_unique<ModelHandle>(*registry_->Acquire("m"));
  auto result = registry_->Unload("m", absl::Milliseconds(20));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(registry_->Get("m")->state, ModelState::kUnloading);
  EXPECT_EQ(stats_->shutdowns.load(), 0);
  handle.reset();  // the last request ends: the model is freed on the unload pool
  for (int i = 0; i < 500 && registry_->Get("m").ok(); ++i) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ(registry_->Get("m").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(stats_->shutdowns.load(), 1);
}

TEST_F(ModelRegistryTest, ShutdownUnloadsEverythingAndRefusesNewLoads) {
  ASSERT_TRUE(registry_->Load({.name = "a", .path = "tiny"}).ok());
  ASSERT_FALSE(registry_->Load({.name = "b", .path = "broken"}).ok());
  auto handle = std::make_unique<ModelHandle>(*registry_->Acquire("a"));
  std::thread release([&] {
    absl::SleepFor(absl::Milliseconds(30));
    handle.reset();
  });
  registry_->Shutdown(absl::Seconds(5));
  release.join();
  EXPECT_TRUE(registry_->List().empty());
  EXPECT_EQ(stats_->shutdowns.load(), 1);
  EXPECT_EQ(registry_->Load({.name = "c", .path = "tiny"}).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(ModelRegistryTest, ConcurrentAcquireAndUnloadNeverLosesAPin) {
  ASSERT_TRUE(registry_->Load({.name = "m", .path = "tiny"}).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> acquired{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      while (!stop) {
        auto handle = registry_->Acquire("m");
        if (handle.ok()) {
          ++acquired;
          // The model is alive as long as the handle is.
          EXPECT_EQ(handle->description().architecture, "FakeForCausalLM");
        }
      }
    });
  }
  while (acquired.load() < 100) {
    absl::SleepFor(absl::Microseconds(100));
  }
  auto result = registry_->Unload("m");
  stop = true;
  for (auto& t : threads) {
    t.join();
  }
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(stats_->shutdowns.load(), 1);
}

}  // namespace
}  // namespace quantserve::server

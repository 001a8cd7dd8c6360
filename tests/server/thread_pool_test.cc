#include "server/thread_pool.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace quantserve::server {
namespace {

TEST(ThreadPoolTest, RejectsZeroThreads) {
  EXPECT_EQ(ThreadPool::Create({.name = "x", .num_threads = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ThreadPoolTest, RunsEverythingQueuedBeforeDestruction) {
  std::atomic<int> ran{0};
  {
    auto pool = ThreadPool::Create({.name = "t", .num_threads = 2});
    ASSERT_TRUE(pool.ok());
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE((*pool)->TrySchedule([&ran] { ++ran; }));
    }
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(ThreadPoolTest, BoundedQueueRefusesWhenFull) {
  auto pool = ThreadPool::Create({.name = "t", .num_threads = 1, .max_queued = 1});
  ASSERT_TRUE(pool.ok());
  absl::Notification started, release;
  ASSERT_TRUE((*pool)->TrySchedule([&] {
    started.Notify();
    release.WaitForNotification();
  }));
  started.WaitForNotification();
  EXPECT_TRUE((*pool)->TrySchedule([] {}));   // waits in the queue
  EXPECT_FALSE((*pool)->TrySchedule([] {}));  // queue full
  EXPECT_EQ((*pool)->queued(), 1u);
  release.Notify();
}

}  // namespace
}  // namespace quantserve::server

#include "quant/kernels/worker_pool.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace quantserve::quant::kernels {
namespace {

// Restores the intra-op thread count a test changes.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadCount() { at::set_num_threads(saved_); }

 private:
  int saved_;
};

// Every index of [begin, end) runs exactly once.
void ExpectCoversOnce(int64_t begin, int64_t end, int64_t grain) {
  std::vector<std::atomic<int>> hits(end > begin ? end - begin : 0);
  ParallelFor(begin, end, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i - begin].fetch_add(1);
  });
  for (size_t i = 0; i < hits.size(); ++i) {
    ASSERT_EQ(hits[i].load(), 1) << "index " << begin + i << " of [" << begin << ", " << end
                                 << ") grain " << grain;
  }
}

TEST(WorkerPoolTest, CoversEveryIndexOnceForAnyThreadCountRangeAndGrain) {
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadCount t(threads);
    for (int64_t begin : {0, 5}) {
      for (int64_t n : {0, 1, 2, 7, 16, 100, 1001}) {
        for (int64_t grain : {1, 3, 16, 64, 5000}) {
          SCOPED_TRACE(testing::Message() << threads << " threads");
          ExpectCoversOnce(begin, begin + n, grain);
        }
      }
    }
  }
}

TEST(WorkerPoolTest, RunsOnAsManyThreadsAsTheIntraOpSetting) {
  for (int threads : {1, 2, 4}) {
    ThreadCount t(threads);
    EXPECT_EQ(internal::WorkerPoolThreads(threads), threads);
    // Fewer tasks than threads: one thread per task.
    EXPECT_EQ(internal::WorkerPoolThreads(1), 1);
  }
}

// Workers asleep after an idle spell (longer than their spin) wake up for the next loop.
TEST(WorkerPoolTest, WakesSleepingWorkers) {
  ThreadCount t(2);
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(internal::WorkerPoolThreads(2), 2);
    ExpectCoversOnce(0, 777, 8);
  }
}

// Concurrent callers (an embedding batch beside a decode step) and calls from inside a loop
// all complete: the ones that do not own the workers run on at::parallel_for.
TEST(WorkerPoolTest, ConcurrentAndNestedCallersComplete) {
  ThreadCount t(2);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      at::set_num_threads(2);
      for (int i = 0; i < 200; ++i) {
        ParallelFor(0, 64, 4, [&](int64_t b, int64_t e) {
          ParallelFor(b, e, 1, [&](int64_t bb, int64_t ee) { total.fetch_add(ee - bb); });
        });
      }
    });
  }
  for (std::thread& c : callers) c.join();
  EXPECT_EQ(total.load(), 4 * 200 * 64);
}

}  // namespace
}  // namespace quantserve::quant::kernels

#include "quant/kernels/worker_pool.h"

#include <ATen/Parallel.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

namespace quantserve::quant::kernels {
namespace {

using Fn = absl::FunctionRef<void(int64_t, int64_t)>;
using Clock = std::chrono::steady_clock;

// How long a worker spins for its next range before sleeping: longer than the serial glue
// between two loops of a decode step (tens of microseconds), short enough that an idle server
// sleeps almost at once.
constexpr auto kSpin = std::chrono::microseconds(1000);

// True on a thread while it runs a range (caller or worker): a nested ParallelFor runs inline.
thread_local bool in_loop = false;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// One worker thread and its mailbox. The submitter writes fn/begin/end, then publishes them by
// bumping `posted`; the worker runs them and publishes `done`.
struct alignas(64) Worker {
  std::atomic<uint64_t> posted{0};
  std::atomic<uint64_t> done{0};
  const Fn* fn = nullptr;
  int64_t begin = 0;
  int64_t end = 0;

  std::mutex mu;
  std::condition_variable cv;
  bool sleeping = false;  // guarded by mu

  void Loop() {
    in_loop = true;
    uint64_t seen = 0;
    for (;;) {
      WaitForPost(seen);
      seen = posted.load(std::memory_order_acquire);
      (*fn)(begin, end);
      done.store(seen, std::memory_order_release);
    }
  }

  void WaitForPost(uint64_t seen) {
    const Clock::time_point deadline = Clock::now() + kSpin;
    for (int i = 1;; ++i) {
      if (posted.load(std::memory_order_acquire) != seen) return;
      CpuRelax();
      if (i % 256 == 0 && Clock::now() > deadline) break;
    }
    std::unique_lock<std::mutex> lock(mu);
    sleeping = true;
    cv.wait(lock, [&] { return posted.load(std::memory_order_acquire) != seen; });
    sleeping = false;
  }

  void Post(const Fn* f, int64_t b, int64_t e, uint64_t seq) {
    fn = f;
    begin = b;
    end = e;
    posted.store(seq, std::memory_order_release);
    // Under mu: a worker between "sleeping = true" and its wait holds mu, so it cannot miss this.
    std::lock_guard<std::mutex> lock(mu);
    if (sleeping) cv.notify_one();
  }

  void WaitDone(uint64_t seq) const {
    for (int i = 1; done.load(std::memory_order_acquire) != seq; ++i) {
      CpuRelax();
      // Oversubscribed (more runnable threads than CPUs): let the worker have this CPU.
      if (i % 4096 == 0) std::this_thread::yield();
    }
  }
};

class Pool {
 public:
  static Pool& Get() {
    static Pool* const pool = new Pool;  // never destroyed: its threads outlive static destructors
    return *pool;
  }

  void ParallelFor(int64_t begin, int64_t end, int64_t grain, Fn fn) {
    if (begin >= end) return;
    const int64_t range = end - begin;
    grain = std::max<int64_t>(grain, 1);
    const int64_t parts =
        std::min<int64_t>(at::get_num_threads(), (range + grain - 1) / grain);
    if (parts <= 1 || in_loop || at::in_parallel_region()) {
      fn(begin, end);
      return;
    }
    std::unique_lock<std::mutex> owner(submit_mu_, std::try_to_lock);
    if (!owner.owns_lock()) {
      owner = {};
      at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { fn(b, e); });
      return;
    }
    while (static_cast<int64_t>(workers_.size()) < parts - 1) {
      Worker& w = workers_.emplace_back();
      std::thread(&Worker::Loop, &w).detach();
    }
    // at::parallel_for's split: `parts` contiguous ranges of ceil(range / parts) items.
    const int64_t chunk = (range + parts - 1) / parts;
    const uint64_t seq = ++seq_;
    int64_t posted = 0;
    for (int64_t p = 1; p < parts; ++p) {
      const int64_t b = begin + p * chunk;
      if (b >= end) break;
      workers_[p - 1].Post(&fn, b, std::min(end, b + chunk), seq);
      ++posted;
    }
    in_loop = true;
    fn(begin, std::min(end, begin + chunk));
    in_loop = false;
    for (int64_t p = 0; p < posted; ++p) workers_[p].WaitDone(seq);
  }

 private:
  std::mutex submit_mu_;       // held by the one caller that owns the workers
  std::deque<Worker> workers_;  // a deque: workers never move once their thread runs
  uint64_t seq_ = 0;
};

}  // namespace

void ParallelFor(int64_t begin, int64_t end, int64_t grain, Fn fn) {
  Pool::Get().ParallelFor(begin, end, grain, fn);
}

namespace internal {

int WorkerPoolThreads(int64_t tasks) {
  std::mutex mu;
  std::set<std::thread::id> ids;
  ParallelFor(0, tasks, 1, [&](int64_t b, int64_t e) {
    // Enough work per task that the caller could not take them all before the workers start.
    volatile double sink = 0;
    for (int64_t i = b; i < e; ++i) {
      for (int j = 0; j < 200000; ++j) sink = sink + j;
    }
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  return static_cast<int>(ids.size());
}

}  // namespace internal
}  // namespace quantserve::quant::kernels

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
constexpr auto kSpin = std::chrono::microseconds(500);

// True on a thread while it runs a range (caller or worker): a nested ParallelFor runs inline.
thread_local bool in_loop = false;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Pieces per participating thread: small enough that a thread which starts late or reads
// memory more slowly takes fewer of them, large enough that claiming one costs nothing.
constexpr int64_t kPiecesPerThread = 4;

// One loop: `pieces` contiguous pieces of [begin, end), claimed from `next` by whoever is free.
struct Job {
  const Fn* fn = nullptr;
  int64_t begin = 0;
  int64_t end = 0;
  int64_t piece = 1;
  int64_t pieces = 0;
  std::atomic<int64_t> next{0};

  void Run() {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < pieces;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t b = begin + i * piece;
      (*fn)(b, std::min(end, b + piece));
    }
  }
};

// One worker thread and its mailbox. The submitter stores the job, then publishes it by
// bumping `posted`; the worker runs pieces of it and publishes `done`.
struct alignas(64) Worker {
  std::atomic<uint64_t> posted{0};
  std::atomic<uint64_t> done{0};
  Job* job = nullptr;

  std::mutex mu;
  std::condition_variable cv;
  bool sleeping = false;  // guarded by mu

  void Loop() {
    in_loop = true;
    uint64_t seen = 0;
    for (;;) {
      WaitForPost(seen);
      seen = posted.load(std::memory_order_acquire);
      job->Run();
      done.store(seen, std::memory_order_release);
    }
  }

  void WaitForPost(uint64_t seen) {
    const Clock::time_point deadline = Clock::now() + kSpin;
    for (int i = 1;; ++i) {
      if (posted.load(std::memory_order_acquire) != seen) return;
      // Mostly pause, but hand the CPU over now and then: other runnable threads (OpenMP's
      // workers in a prefill GEMM, another model's step) take it, an idle CPU comes back at once.
      if (i % 64 == 0) {
        std::this_thread::yield();
        if (Clock::now() > deadline) break;
      } else {
        CpuRelax();
      }
    }
    std::unique_lock<std::mutex> lock(mu);
    sleeping = true;
    cv.wait(lock, [&] { return posted.load(std::memory_order_acquire) != seen; });
    sleeping = false;
  }

  void Post(Job* j, uint64_t seq) {
    job = j;
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
    const int64_t threads =
        std::min<int64_t>(at::get_num_threads(), (range + grain - 1) / grain);
    if (threads <= 1 || in_loop || at::in_parallel_region()) {
      fn(begin, end);
      return;
    }
    std::unique_lock<std::mutex> owner(submit_mu_, std::try_to_lock);
    if (!owner.owns_lock()) {
      owner = {};
      at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { fn(b, e); });
      return;
    }
    while (static_cast<int64_t>(workers_.size()) < threads - 1) {
      Worker& w = workers_.emplace_back();
      std::thread(&Worker::Loop, &w).detach();
    }
    Job job;
    job.fn = &fn;
    job.begin = begin;
    job.end = end;
    job.piece = std::max(grain, (range + threads * kPiecesPerThread - 1) /
                                    (threads * kPiecesPerThread));
    job.pieces = (range + job.piece - 1) / job.piece;
    const uint64_t seq = ++seq_;
    for (int64_t p = 0; p < threads - 1; ++p) workers_[p].Post(&job, seq);
    in_loop = true;
    job.Run();
    in_loop = false;
    for (int64_t p = 0; p < threads - 1; ++p) workers_[p].WaitDone(seq);
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
  std::atomic<int64_t> arrived{0};
  ParallelFor(0, tasks, 1, [&](int64_t b, int64_t e) {
    {
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(std::this_thread::get_id());
    }
    // A barrier (with a timeout): a thread holding a task cannot claim another, so `tasks`
    // tasks meet `tasks` threads if the pool has them.
    arrived.fetch_add(e - b);
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(2);
    while (arrived.load() < tasks && Clock::now() < deadline) std::this_thread::yield();
  });
  return static_cast<int>(ids.size());
}

}  // namespace internal
}  // namespace quantserve::quant::kernels

#pragma once
// A fixed-size pool of worker threads running queued closures in FIFO order.
//
// The server keeps blocking work off gRPC's callback threads: model loads and unloads run on
// their own pools, and unary inference calls (Embed, Score, Tokenize), which block on the
// engine, run on a request pool. The queue may be bounded, in which case TrySchedule refuses
// work instead of letting latency grow without limit.
//
// Thread-safety: all methods may be called from any thread, including pool threads.
// Destruction runs every closure already queued, then joins the workers; closures must not
// destroy their own pool.

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace quantserve::server {

class ThreadPool {
 public:
  struct Options {
    // Name used in logs and errors ("load", "request").
    std::string name = "pool";
    // Worker threads; must be >= 1.
    int num_threads = 1;
    // Most closures waiting to run (not counting running ones); 0 = unbounded.
    size_t max_queued = 0;
  };

  static absl::StatusOr<std::unique_ptr<ThreadPool>> Create(Options options);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn`. Returns false (and drops `fn`) when the queue is full or the pool is
  // shutting down.
  bool TrySchedule(std::function<void()> fn);

  // Closures waiting to run.
  size_t queued() const;
  const Options& options() const { return options_; }

 private:
  explicit ThreadPool(Options options);
  void WorkLoop();
  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace quantserve::server

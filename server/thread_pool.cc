#include "server/thread_pool.h"

#include <utility>

#include "absl/status/status.h"

namespace quantserve::server {

absl::StatusOr<std::unique_ptr<ThreadPool>> ThreadPool::Create(Options options) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError("ThreadPool '" + options.name +
                                      "': num_threads must be >= 1, got " +
                                      std::to_string(options.num_threads));
  }
  auto pool = std::unique_ptr<ThreadPool>(new ThreadPool(std::move(options)));
  for (int i = 0; i < pool->options_.num_threads; ++i) {
    pool->workers_.emplace_back([p = pool.get()] { p->WorkLoop(); });
  }
  return pool;
}

ThreadPool::ThreadPool(Options options) : options_(std::move(options)) {}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& worker : workers_) {
    worker.join();
  }
}

bool ThreadPool::TrySchedule(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || (options_.max_queued > 0 && queue_.size() >= options_.max_queued)) {
    return false;
  }
  queue_.push_back(std::move(fn));
  return true;
}

size_t ThreadPool::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

bool ThreadPool::HasWorkOrStopping() const { return stopping_ || !queue_.empty(); }

void ThreadPool::WorkLoop() {
  while (true) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ThreadPool::HasWorkOrStopping));
      if (queue_.empty()) {
        return;  // stopping and drained
      }
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

}  // namespace quantserve::server

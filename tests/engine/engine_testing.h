#pragma once
// Helpers shared by the engine tests.

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine_api.h"

namespace quantserve::engine::testing {

// Collects a generation's output and waits for OnFinish.
class Collector final : public GenerateObserver {
 public:
  // Called on the scheduler thread with each chunk, after it is recorded (optional).
  std::function<void(const GenerateChunk&)> on_chunk;
  void OnChunk(GenerateChunk chunk) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < chunk.token_ids.size(); ++i) {
      ids.push_back(chunk.token_ids[i]);
      if (i < chunk.logprobs.size()) logprobs.push_back(chunk.logprobs[i]);
    }
    text += chunk.text;
    if (on_chunk) on_chunk(chunk);
  }
  void OnFinish(absl::StatusOr<GenerateFinish> f) override {
    std::lock_guard<std::mutex> lock(mu_);
    finish = std::move(f);
    if (finish.ok()) text += finish->text;
    done_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  size_t tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return ids.size();
  }
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::string text;
  absl::StatusOr<GenerateFinish> finish = absl::UnknownError("not finished");

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

}  // namespace quantserve::engine::testing

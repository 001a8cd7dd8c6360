#pragma once
// GenerationScheduler: owns one causal LM's generation thread and request queue.
//
// Generate() enqueues and returns at once; the scheduler thread runs requests one at a time
// (prefill, then decode steps), streaming chunks to each request's observer and checking its
// cancel flag before every step. The queue and step loop are where continuous batching will
// go: requests already carry everything a batched step needs (own cache, sampler, stream).
//
// Thread-safety: Generate/Shutdown from any thread. Observers are called on the scheduler
// thread only, except that a request refused at submission (queue full, shutting down) is
// finished on the caller's thread before Generate returns. Shutdown() finishes queued work,
// then joins.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "engine/engine_api.h"
#include "models/llama.h"
#include "models/tokenizer/tokenizer.h"

namespace quantserve::engine {

class GenerationScheduler {
 public:
  struct Options {
    std::shared_ptr<const models::LlamaForCausalLM> model;  // loaded, shared with Score
    std::shared_ptr<const models::Tokenizer> tokenizer;
    std::vector<int32_t> eos_token_ids;  // from generation_config.json / config.json
    int64_t context_length = 2048;      // max_position_embeddings
    int32_t max_queued = 256;           // waiting requests beyond this get RESOURCE_EXHAUSTED
    int32_t num_threads = 0;            // intra-op threads on the scheduler thread; 0 = default
  };
  explicit GenerationScheduler(Options options);
  ~GenerationScheduler();

  std::unique_ptr<GenerationHandle> Generate(GenerateParams params,
                                             std::shared_ptr<GenerateObserver> observer);
  void Shutdown();

 private:
  struct Request;
  void Loop();
  void Run(Request& request);

  Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Request>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace quantserve::engine

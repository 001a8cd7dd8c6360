#pragma once
// GenerationScheduler: iteration-level (continuous) batching for one causal LM.
//
// One scheduler thread runs steps. Each step:
//   1. drops sequences that were cancelled (or whose observer went away) and frees their
//      KV cache, so a cancelled request leaves within one step;
//   2. admits queued requests, first come first served, while the batch has room
//      (Options::max_batch_size sequences, Options::max_prefill_tokens prompt tokens this
//      step) and the KV budget covers their whole cache (prompt + max_new_tokens);
//   3. runs ONE packed forward over every running sequence: a token each for those decoding,
//      the next chunk of the prompt (at most Options::max_prefill_tokens tokens) for those
//      prefilling, Score texts included; a prompt's chunks depend only on its length, so
//      chunking never makes a sequence's results depend on the batch. The
//      linear layers read their weights once for all rows, which is what makes many streams
//      cheap; attention runs per sequence on its own cache;
//   4. samples each sequence's next token with its own parameters and sampler, streams the
//      chunk, and retires finished sequences.
//
// KV cache: one slab per sequence sized for prompt + max_new_tokens, allocated at admission
// and freed when it finishes; the sum of slabs never exceeds Options::kv_cache_bytes. A
// request that could never fit is RESOURCE_EXHAUSTED at submission; one that fits later
// waits in the queue, and the queue beyond Options::max_queued is RESOURCE_EXHAUSTED too.
//
// Determinism: in the default mode a sequence's rows share matmuls with the rest of the batch,
// so float rounding (not the math) can differ from a solo run. With Options::deterministic
// each sequence's rows run as their own forward inside the step (same schedule, no shared
// matmuls): its logits are bit-identical to a solo run, at the cost of batching's speed-up.
//
// Thread-safety: Generate/Score/Stats/Shutdown from any thread. Observers are called on the
// scheduler thread, except that a request refused at submission (bad input, queue full,
// shutting down) is finished on the caller's thread before Generate returns.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "engine/engine_api.h"
#include "models/llama.h"
#include "models/tokenizer/tokenizer.h"

namespace quantserve::engine {

class GenerationScheduler {
 public:
  struct Options {
    std::shared_ptr<const models::LlamaForCausalLM> model;  // loaded
    std::shared_ptr<const models::Tokenizer> tokenizer;
    std::vector<int32_t> eos_token_ids;  // from generation_config.json / config.json
    int64_t context_length = 2048;       // max_position_embeddings
    int32_t max_queued = 256;            // waiting requests beyond this: RESOURCE_EXHAUSTED
    int32_t max_batch_size = 32;         // sequences in one step
    int64_t max_prefill_tokens = 2048;   // prompt tokens prefilled per step; longer prompts
                                         // are prefilled in chunks of this size
    int64_t kv_cache_bytes = 0;          // KV budget over all running sequences; 0 = enough
                                         // for max_batch_size full-context sequences
    bool deterministic = false;          // see the header comment
    int32_t num_threads = 0;             // intra-op threads on the scheduler thread; 0 = default
  };
  explicit GenerationScheduler(Options options);
  ~GenerationScheduler();

  std::unique_ptr<GenerationHandle> Generate(GenerateParams params,
                                             std::shared_ptr<GenerateObserver> observer);
  // Scores a text as one more sequence of the batch (prefill only); blocks the caller.
  absl::StatusOr<ScoreResult> Score(const ScoreParams& params);
  ServingStats Stats() const;
  int64_t kv_cache_budget_bytes() const { return kv_budget_; }
  void Shutdown();

 private:
  struct Sequence;
  absl::Status Submit(std::shared_ptr<Sequence> seq);
  void Loop();
  // One step over `running_` (owned by the scheduler thread).
  void Step();
  void Admit();
  void Retire(Sequence& seq, absl::StatusOr<GenerateFinish> finish);

  Options options_;
  int64_t kv_budget_ = 0;
  int64_t kv_per_token_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Sequence>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Scheduler thread only.
  std::vector<std::shared_ptr<Sequence>> running_;
  // Published for Stats().
  std::atomic<int32_t> running_count_{0};
  std::atomic<int64_t> kv_used_{0};
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> step_rows_{0};
  std::thread thread_;
};

}  // namespace quantserve::engine

#pragma once
// EmbedBatcher: batches concurrent Embed requests on one encoder model.
//
// Callers (the server's request threads) tokenize on their own thread and block in Embed();
// one batcher thread takes queued texts first come first served, pads as many as fit in
// Options::max_batch_tokens (rows x longest row) into one [B, T] forward with an attention
// mask, pools each row with its request's pooling and wakes the requests whose rows are all
// done. A request with more texts than fit is spread over several forwards.
//
// Padding changes only which rows share a matmul, not the math: rows agree with a solo run
// to float rounding (tested to 1e-5). With Options::deterministic every text runs alone.
//
// Thread-safety: Embed/Shutdown from any thread. Shutdown finishes queued work, then joins.

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "models/bert.h"

namespace quantserve::engine {

class EmbedBatcher {
 public:
  struct Options {
    std::shared_ptr<const models::BertModel> model;  // loaded
    int64_t max_batch_tokens = 2048;  // padded rows x columns per forward (at least one text)
    int32_t max_queued = 256;         // waiting texts beyond this: RESOURCE_EXHAUSTED
    bool deterministic = false;
    int32_t num_threads = 0;          // intra-op threads on the batcher thread; 0 = default
  };
  explicit EmbedBatcher(Options options);
  ~EmbedBatcher();

  // Embeds every row of `inputs` (token ids, already truncated; each non-empty) and returns
  // one float32 vector per row. Blocks until done. UNAVAILABLE after Shutdown,
  // RESOURCE_EXHAUSTED when the queue is full.
  absl::StatusOr<std::vector<std::vector<float>>> Embed(std::vector<std::vector<int32_t>> inputs,
                                                        const std::string& pooling, bool normalize);
  // Forwards run so far and rows over all of them (rows/forwards = batch size).
  int64_t forwards() const;
  int64_t rows() const;
  void Shutdown();

 private:
  struct Job;
  struct Row {
    std::shared_ptr<Job> job;
    size_t index = 0;
  };
  void Loop();
  void RunBatch(std::vector<Row>& batch);

  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Row> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t forwards_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t rows_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace quantserve::engine

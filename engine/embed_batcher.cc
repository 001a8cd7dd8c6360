#include "engine/embed_batcher.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/torch_status.h"

namespace quantserve::engine {

struct EmbedBatcher::Job {
  std::vector<std::vector<int32_t>> inputs;
  std::string pooling;
  bool normalize = true;
  // Guarded by the batcher's mu_.
  std::vector<std::vector<float>> outputs;
  size_t pending = 0;
  absl::Status status;
  std::condition_variable done;
};

EmbedBatcher::EmbedBatcher(Options options) : options_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

EmbedBatcher::~EmbedBatcher() { Shutdown(); }

absl::StatusOr<std::vector<std::vector<float>>> EmbedBatcher::Embed(
    std::vector<std::vector<int32_t>> inputs, const std::string& pooling, bool normalize) {
  if (inputs.empty()) return std::vector<std::vector<float>>{};
  auto job = std::make_shared<Job>();
  job->inputs = std::move(inputs);
  job->pooling = pooling;
  job->normalize = normalize;
  job->outputs.resize(job->inputs.size());
  job->pending = job->inputs.size();
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("model is shutting down");
  if (static_cast<int64_t>(queue_.size() + job->inputs.size()) > options_.max_queued &&
      !queue_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "embedding queue is full (", queue_.size(), " texts waiting, limit ", options_.max_queued,
        "); retry later"));
  }
  for (size_t i = 0; i < job->inputs.size(); ++i) queue_.push_back({job, i});
  cv_.notify_one();
  job->done.wait(lock, [&] { return job->pending == 0; });
  if (!job->status.ok()) return job->status;
  return std::move(job->outputs);
}

int64_t EmbedBatcher::forwards() const {
  std::lock_guard<std::mutex> lock(mu_);
  return forwards_;
}

int64_t EmbedBatcher::rows() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rows_;
}

void EmbedBatcher::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EmbedBatcher::Loop() {
  if (options_.num_threads > 0) at::set_num_threads(options_.num_threads);
  for (;;) {
    std::vector<Row> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      // First come first served, while the padded batch stays within the token budget.
      size_t longest = 0;
      while (!queue_.empty()) {
        const Row& next = queue_.front();
        const size_t len = next.job->inputs[next.index].size();
        const size_t padded = (batch.size() + 1) * std::max(longest, len);
        if (!batch.empty() && (options_.deterministic ||
                               static_cast<int64_t>(padded) > options_.max_batch_tokens)) {
          break;
        }
        longest = std::max(longest, len);
        batch.push_back(queue_.front());
        queue_.pop_front();
      }
    }
    RunBatch(batch);
  }
}

void EmbedBatcher::RunBatch(std::vector<Row>& batch) {
  const int64_t b = static_cast<int64_t>(batch.size());
  int64_t t = 0;
  for (const Row& r : batch) t = std::max<int64_t>(t, r.job->inputs[r.index].size());
  std::vector<int64_t> ids(b * t, 0);
  std::vector<int64_t> mask(b * t, 0);
  for (int64_t i = 0; i < b; ++i) {
    const auto& in = batch[i].job->inputs[batch[i].index];
    for (size_t j = 0; j < in.size(); ++j) {
      ids[i * t + j] = in[j];
      mask[i * t + j] = 1;
    }
  }
  std::vector<std::vector<float>> out(b);
  absl::Status status = common::TorchCall("embed", [&] {
    c10::InferenceMode inference;
    const auto device = options_.model->embeddings->word_embeddings->weight.device();
    at::Tensor input = at::tensor(ids, at::kLong).view({b, t}).to(device);
    at::Tensor m = at::tensor(mask, at::kLong).view({b, t}).to(device);
    at::Tensor tokens = options_.model->Forward(input, m);
    // Rows of one request are pooled together with its pooling (they are adjacent).
    for (int64_t i = 0; i < b;) {
      int64_t j = i + 1;
      while (j < b && batch[j].job == batch[i].job) ++j;
      const Job& job = *batch[i].job;
      at::Tensor pooled = models::PoolEmbeddings(tokens.narrow(0, i, j - i), m.narrow(0, i, j - i),
                                                 job.pooling, job.normalize)
                              .to(at::kCPU)
                              .contiguous();
      for (int64_t r = i; r < j; ++r) {
        at::Tensor row = pooled[r - i];
        out[r].assign(row.const_data_ptr<float>(), row.const_data_ptr<float>() + row.numel());
      }
      i = j;
    }
  });
  std::lock_guard<std::mutex> lock(mu_);
  forwards_ += 1;
  rows_ += b;
  for (int64_t i = 0; i < b; ++i) {
    Job& job = *batch[i].job;
    if (!status.ok()) job.status = status;
    job.outputs[batch[i].index] = std::move(out[i]);
    if (--job.pending == 0) job.done.notify_all();
  }
}

}  // namespace quantserve::engine

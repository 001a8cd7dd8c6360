#pragma once
// The engine API: everything the server layer knows about models, in plain C++ types.
//
// This header is the seam between gRPC (server/) and LibTorch (models/, loader/, engine/):
// it includes neither. The server owns the model registry and lifecycle state machine and
// holds each loaded model as a `ServableModel`; the engine owns weights, tokenizers and the
// generation scheduler behind it.
//
// Thread-safety: every `ServableModel` method may be called concurrently from any thread.
// Ownership: `LoadServableModel` hands the model to the caller; the model must outlive every
// `GenerationHandle` it returned (the server's model handles guarantee this by draining).

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quantserve::engine {

enum class Task { kGenerate, kEmbed };

// What to load and how. Paths are already resolved and checked against --model_root.
struct LoadOptions {
  std::string name;                      // unique model name, for logs and metrics
  std::string path;                      // absolute model directory (config.json, *.safetensors)
  std::string quantization_config_json;  // HF quantization_config; empty = checkpoint's or none
  std::string dtype = "auto";            // auto|float32|bfloat16|float16
  std::string device_map = "cpu";        // auto|cpu|cuda|cuda:N (JSON objects come later)
  std::string max_memory_json;           // {"cpu": "8GiB", "0": "20GiB"}; empty = no limit
  int num_threads = 0;  // intra-op threads on the threads running this model; 0 = default
  // Sample texts to calibrate static activation scales on after loading (quanto with
  // activations; quant::Quantizer::Calibrate). Each is tokenized with special tokens and run
  // through the model once, in order. Empty = none; a method that needs them refuses the load.
  std::vector<std::string> calibration_texts;
  // The CPU 4-bit kernels' input precision: 16 or 8 (quant::kernels::Lut4Weight).
  int activation_bits = 16;
  // Continuous batching (causal LMs): sequences decoded together in one step, prompt tokens
  // prefilled per step, and the KV cache budget over all of them (0 = enough for
  // max_batch_size sequences at full context). Embed batches up to max_prefill_tokens too.
  int32_t max_batch_size = 32;
  int64_t max_prefill_tokens = 2048;
  int64_t kv_cache_bytes = 0;
  int32_t max_queued = 256;  // waiting requests beyond this are RESOURCE_EXHAUSTED
  // Each request's output independent of what else runs (no shared matmuls; slower).
  bool deterministic = false;
};

// One progress report of a running load; phases in order: "config", "quantizer",
// "skeleton", "weights", "post_process", "calibrate" (only for a quantizer that calibrates
// on LoadOptions::calibration_texts; tensors_* then count texts), "ready".
struct LoadProgress {
  std::string phase;
  int64_t tensors_done = 0;
  int64_t tensors_total = 0;
  int64_t bytes_done = 0;
  int64_t bytes_total = 0;
};

// Facts about a loaded model, fixed once it is loaded.
struct ModelDescription {
  std::string architecture;              // e.g. "LlamaForCausalLM", "BertModel"
  Task task = Task::kGenerate;
  std::string quant_method = "none";
  std::string quantization_config_json;  // normalized, defaults filled; "" when none
  std::string dtype;                     // float32|bfloat16|float16
  std::string device;                    // cpu|cuda:0
  int64_t memory_footprint_bytes = 0;    // weights + quant state (transformers' definition)
  int64_t parameters = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double load_seconds = 0;
  int64_t peak_load_memory_bytes = 0;    // peak RSS growth of the process during the load
  std::string default_pooling;           // embed models: mean|cls|last
  // Identifies the tokenizer (a stable hash of tokenizer.json's bytes, hex): models that
  // agree on it turn the same text into the same token ids, as the variants of a route must.
  std::string tokenizer_fingerprint;
  // Which kernel each linear layer's forward runs, with how many layers run it
  // ("lut4_gemv_avx2": 154, "aten_linear": 1).
  std::map<std::string, int32_t> kernels;
  int32_t max_batch_size = 0;
  int64_t kv_cache_budget_bytes = 0;    // causal LMs
  bool deterministic = false;
};

// A snapshot of a model's scheduler, for metrics.
struct ServingStats {
  int32_t running = 0;              // sequences in the batch
  int32_t waiting = 0;              // admitted to the queue, not yet running
  int64_t kv_cache_used_bytes = 0;
  int64_t kv_cache_budget_bytes = 0;
  int64_t steps = 0;                // forwards run so far
  int64_t step_rows = 0;            // rows (tokens) over all steps: step_rows/steps = batch
};

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  float repetition_penalty = 1.0f;
  std::optional<uint64_t> seed;  // same seed + same request = same tokens
};

struct GenerateParams {
  std::string prompt;              // used when input_ids is empty
  std::vector<int32_t> input_ids;  // takes precedence over prompt
  int32_t max_new_tokens = 64;
  SamplingParams sampling;
  std::vector<std::string> stop;   // stop strings; the matched text is not returned
  bool ignore_eos = false;
  int32_t logprobs = 0;            // 0 none, 1 chosen token, k>1 also top-k alternatives
};

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0;
};

// A chunk of generated output. `text` is the UTF-8 delta since the previous chunk (it may be
// empty while a multi-byte character or a possible stop string is pending).
struct GenerateChunk {
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<float> logprobs;                        // one per token when requested
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // one list per token when k > 1
};

enum class FinishReason { kLength, kStop, kEos, kCancelled };

struct GenerateFinish {
  FinishReason reason = FinishReason::kLength;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  std::string text;  // pending text flushed at the end (may be empty)
  double time_to_first_token_seconds = 0;
  double seconds = 0;
};

// Receives one generation's output, from the model's scheduler thread. `OnChunk` may be
// called any number of times, then `OnFinish` exactly once (also on error or cancellation).
// Implementations must not block: queue the chunk and return.
class GenerateObserver {
 public:
  virtual ~GenerateObserver() = default;
  virtual void OnChunk(GenerateChunk chunk) = 0;
  virtual void OnFinish(absl::StatusOr<GenerateFinish> finish) = 0;
};

// A submitted generation. Cancel() is idempotent and thread-safe; the scheduler stops the
// request within one decode step and finishes it with FinishReason::kCancelled.
class GenerationHandle {
 public:
  virtual ~GenerationHandle() = default;
  virtual void Cancel() = 0;
};

struct EmbedParams {
  std::vector<std::string> texts;
  std::string pooling;  // mean|cls|last; empty = the model's default
  bool normalize = true;
};

struct EmbedResult {
  std::vector<std::vector<float>> embeddings;
  int32_t prompt_tokens = 0;
};

struct ScoreParams {
  std::string text;                // used when input_ids is empty
  std::vector<int32_t> input_ids;
  bool add_special_tokens = true;  // prepend BOS as generation does
  // Also return every position's whole log-softmax row (Compare's KL divergence): n-1 rows of
  // vocab floats, so callers bound n.
  bool full_distributions = false;
};

struct ScoreResult {
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;  // logprobs[i] = log p(token_ids[i+1] | token_ids[..i])
  double perplexity = 0;
  // With full_distributions: row i (vocab floats) is log p(. | token_ids[..i]), row-major.
  std::vector<float> distributions;
  int64_t vocab = 0;
};

struct TokenizeResult {
  std::vector<int32_t> token_ids;
  std::vector<std::string> tokens;  // the vocabulary strings
};

// Where SaveModel writes; the path is already resolved against --model_root.
struct SaveOptions {
  std::string output_dir;       // absolute; must not exist yet (or be an empty directory)
  int64_t max_shard_bytes = 0;  // safetensors shard size limit; 0 = transformers' 50 GB
};

struct SaveResult {
  std::vector<std::string> files;  // relative to output_dir
  int64_t bytes_written = 0;       // tensor bytes
  double seconds = 0;
};

// A loaded model ready to serve.
class ServableModel {
 public:
  virtual ~ServableModel() = default;

  virtual const ModelDescription& description() const = 0;

  // Starts a generation; output flows to `observer`, which the engine keeps alive until
  // OnFinish. Errors in the request (empty prompt, too long) arrive through OnFinish.
  virtual std::unique_ptr<GenerationHandle> Generate(GenerateParams params,
                                                     std::shared_ptr<GenerateObserver> observer) = 0;

  virtual absl::StatusOr<EmbedResult> Embed(const EmbedParams& params) = 0;
  virtual absl::StatusOr<ScoreResult> Score(const ScoreParams& params) = 0;
  virtual absl::StatusOr<TokenizeResult> Tokenize(std::string_view text,
                                                  bool add_special_tokens) = 0;

  // Writes the model as a Hugging Face model directory in its method's serialized layout
  // (config.json with quantization_config, safetensors shards, tokenizer files), blocking the
  // calling thread; requests keep running meanwhile (weights are only read). Errors:
  // FAILED_PRECONDITION (method not serializable), ALREADY_EXISTS (output_dir not empty).
  virtual absl::StatusOr<SaveResult> Save(const SaveOptions& options) {
    return absl::UnimplementedError("this model cannot be saved");
  }

  virtual ServingStats Stats() const { return {}; }

  // Stops the scheduler after finishing (not cancelling) queued work. Called by the server
  // once no handle pins the model; later calls return UNAVAILABLE.
  virtual void Shutdown() = 0;
};

using LoadProgressCallback = std::function<void(const LoadProgress&)>;

// Loads a model, blocking the calling (load pool) thread. `on_progress` is called on that
// thread. Errors: NOT_FOUND (no such directory/files), INVALID_ARGUMENT (bad config or
// options, missing/unexpected tensors), DATA_LOSS (corrupt checkpoint, naming file and
// tensor), RESOURCE_EXHAUSTED (will not fit), FAILED_PRECONDITION (unsupported here).
absl::StatusOr<std::unique_ptr<ServableModel>> LoadServableModel(
    const LoadOptions& options, const LoadProgressCallback& on_progress);

// "cpu" or "cpu, cuda:0 (NVIDIA H100)": what this process can place models on, for the
// startup line.
std::string DescribeDevices();

// Names of the quant_method values this build accepts (at least "none").
std::vector<std::string> SupportedQuantMethods();

}  // namespace quantserve::engine

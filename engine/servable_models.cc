// The ServableModel implementations (causal LM and encoder) and LoadServableModel.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <iterator>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/env.h"
#include "common/logging.h"
#include "common/stable_hash.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "engine/embed_batcher.h"
#include "engine/engine_api.h"
#include "engine/generation_scheduler.h"
#include "loader/load_pipeline.h"
#include "loader/model_saver.h"
#include "models/tokenizer/tokenizer.h"
#include "quant/quantizer_registry.h"
#include "common/json_nesting.h"

namespace quantserve::engine {
namespace {

std::string DtypeName(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return "float32";
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::Half: return "float16";
    default: return c10::toString(t);
  }
}

ModelDescription Describe(const loader::LoadedModel& m) {
  ModelDescription d;
  d.architecture = m.config.architecture_name;
  d.task = m.encoder ? Task::kEmbed : Task::kGenerate;
  d.quant_method = m.quantizer->quant_method();
  d.quantization_config_json = m.quantizer->NormalizedConfigJson();
  d.dtype = DtypeName(m.dtype);
  d.device = m.device.str();
  d.memory_footprint_bytes = m.memory_footprint_bytes;
  d.parameters = m.parameters;
  d.vocab_size = m.config.vocab_size;
  d.max_position_embeddings = m.config.max_position_embeddings;
  d.load_seconds = m.seconds;
  d.peak_load_memory_bytes = m.peak_rss_growth_bytes;
  if (m.encoder) d.default_pooling = "mean";
  models::Module& root = m.causal_lm ? static_cast<models::Module&>(*m.causal_lm)
                                     : static_cast<models::Module&>(*m.encoder);
  for (const auto& named : root.NamedModules()) {
    if (const auto* linear = dynamic_cast<const models::Linear*>(named.module)) {
      d.kernels[linear->kernel_name()] += 1;
    }
  }
  return d;
}

// Shared by both kinds: tokenizer access and the shutdown flag.
class ServableBase : public ServableModel {
 public:
  ServableBase(ModelDescription description, std::shared_ptr<const models::Tokenizer> tokenizer,
               std::shared_ptr<const loader::LoadedModel> loaded, std::string source_dir)
      : description_(std::move(description)),
        tokenizer_(std::move(tokenizer)),
        loaded_(std::move(loaded)),
        source_dir_(std::move(source_dir)) {}

  const ModelDescription& description() const override { return description_; }

  absl::StatusOr<SaveResult> Save(const SaveOptions& options) override {
    QS_RETURN_IF_ERROR(CheckOpen());
    loader::SaveModelOptions o;
    o.output_dir = options.output_dir;
    if (options.max_shard_bytes > 0) o.max_shard_bytes = options.max_shard_bytes;
    QS_ASSIGN_OR_RETURN(loader::SaveModelResult r, loader::SaveModel(*loaded_, source_dir_, o));
    QS_LOG(INFO) << "model saved" << common::Kv("path", options.output_dir)
                 << common::Kv("quant_method", description_.quant_method)
                 << common::Kv("tensors", r.tensors) << common::Kv("bytes", r.tensor_bytes)
                 << common::Kv("files", r.files.size()) << common::Kv("seconds", r.seconds);
    return SaveResult{.files = std::move(r.files), .bytes_written = r.tensor_bytes,
                      .seconds = r.seconds};
  }

  absl::StatusOr<TokenizeResult> Tokenize(std::string_view text,
                                          bool add_special_tokens) override {
    QS_RETURN_IF_ERROR(CheckOpen());
    TokenizeResult out;
    out.token_ids = tokenizer_->Encode(text, add_special_tokens);
    out.tokens.reserve(out.token_ids.size());
    for (int32_t id : out.token_ids) out.tokens.push_back(tokenizer_->IdToToken(id));
    return out;
  }

 protected:
  absl::Status CheckOpen() const {
    if (shut_down_.load()) return absl::UnavailableError("model is shut down");
    return absl::OkStatus();
  }
  absl::Status WrongTask(const char* rpc) const {
    return absl::FailedPreconditionError(absl::StrCat(
        "model is a ", description_.architecture, " (task ",
        description_.task == Task::kEmbed ? "embed" : "generate", ") and does not serve ", rpc));
  }

  ModelDescription description_;
  std::shared_ptr<const models::Tokenizer> tokenizer_;
  // The model with its quantizer, for Save (the servables hold the model modules too).
  std::shared_ptr<const loader::LoadedModel> loaded_;
  std::string source_dir_;
  std::atomic<bool> shut_down_{false};
};

class CausalLmServable final : public ServableBase {
 public:
  CausalLmServable(ModelDescription description, std::shared_ptr<const models::Tokenizer> tok,
                   std::shared_ptr<const loader::LoadedModel> loaded, std::string source_dir,
                   std::vector<int32_t> eos_ids, const LoadOptions& options)
      : ServableBase(std::move(description), tok, loaded, std::move(source_dir)),
        scheduler_({.model = loaded->causal_lm,
                    .tokenizer = tok,
                    .eos_token_ids = std::move(eos_ids),
                    .context_length = loaded->causal_lm->config().max_position_embeddings,
                    .max_queued = options.max_queued,
                    .max_batch_size = options.max_batch_size,
                    .max_prefill_tokens = options.max_prefill_tokens,
                    .kv_cache_bytes = options.kv_cache_bytes,
                    .deterministic = options.deterministic,
                    .num_threads = options.num_threads}) {
    description_.max_batch_size = options.max_batch_size;
    description_.kv_cache_budget_bytes = scheduler_.kv_cache_budget_bytes();
    description_.deterministic = options.deterministic;
  }

  std::unique_ptr<GenerationHandle> Generate(GenerateParams params,
                                             std::shared_ptr<GenerateObserver> observer) override {
    return scheduler_.Generate(std::move(params), std::move(observer));
  }

  absl::StatusOr<EmbedResult> Embed(const EmbedParams&) override { return WrongTask("Embed"); }

  // Runs in the generation batch as a prefill-only sequence.
  absl::StatusOr<ScoreResult> Score(const ScoreParams& params) override {
    QS_RETURN_IF_ERROR(CheckOpen());
    return scheduler_.Score(params);
  }

  ServingStats Stats() const override { return scheduler_.Stats(); }

  void Shutdown() override {
    shut_down_.store(true);
    scheduler_.Shutdown();
  }

 private:
  GenerationScheduler scheduler_;
};

class EncoderServable final : public ServableBase {
 public:
  EncoderServable(ModelDescription description, std::shared_ptr<const models::Tokenizer> tok,
                  std::shared_ptr<const loader::LoadedModel> loaded, std::string source_dir,
                  int64_t max_tokens, const LoadOptions& options)
      : ServableBase(std::move(description), std::move(tok), loaded, std::move(source_dir)),
        max_tokens_(max_tokens),
        batcher_({.model = loaded->encoder,
                  .max_batch_tokens = std::max<int64_t>(options.max_prefill_tokens, max_tokens),
                  .max_queued = options.max_queued,
                  .deterministic = options.deterministic,
                  .num_threads = options.num_threads}) {
    description_.max_batch_size = options.max_batch_size;
    description_.deterministic = options.deterministic;
  }

  std::unique_ptr<GenerationHandle> Generate(GenerateParams,
                                             std::shared_ptr<GenerateObserver> observer) override {
    observer->OnFinish(WrongTask("Generate"));
    return std::make_unique<NoopHandle>();
  }

  absl::StatusOr<ScoreResult> Score(const ScoreParams&) override { return WrongTask("Score"); }

  absl::StatusOr<EmbedResult> Embed(const EmbedParams& params) override {
    QS_RETURN_IF_ERROR(CheckOpen());
    std::string pooling = params.pooling.empty() ? description_.default_pooling : params.pooling;
    if (pooling != "mean" && pooling != "cls" && pooling != "last") {
      return absl::InvalidArgumentError(
          absl::StrCat("pooling: '", pooling, "' is not supported (mean, cls, last)"));
    }
    EmbedResult out;
    std::vector<std::vector<int32_t>> inputs;
    inputs.reserve(params.texts.size());
    for (const std::string& text : params.texts) {
      std::vector<int32_t> ids = tokenizer_->Encode(text, /*add_special_tokens=*/true);
      if (static_cast<int64_t>(ids.size()) > max_tokens_) {
        // Truncate the content but keep the closing special token ([SEP]), as HF truncation.
        const int32_t last = ids.back();
        ids.resize(max_tokens_ - 1);
        ids.push_back(last);
      }
      out.prompt_tokens += static_cast<int32_t>(ids.size());
      inputs.push_back(std::move(ids));
    }
    QS_ASSIGN_OR_RETURN(out.embeddings, batcher_.Embed(std::move(inputs), pooling, params.normalize));
    return out;
  }

  ServingStats Stats() const override {
    ServingStats s;
    s.steps = batcher_.forwards();
    s.step_rows = batcher_.rows();
    return s;
  }

  void Shutdown() override {
    shut_down_.store(true);
    batcher_.Shutdown();
  }

 private:
  class NoopHandle final : public GenerationHandle {
   public:
    void Cancel() override {}
  };

  int64_t max_tokens_;
  EmbedBatcher batcher_;
};

// Longest input an encoder sees, as sentence-transformers decides it: sentence_bert_config.json's
// max_seq_length, else the tokenizer's truncation, capped by the position table.
absl::StatusOr<int64_t> EncoderMaxTokens(const std::string& dir, const models::ModelConfig& config,
                                         const models::Tokenizer& tok) {
  int64_t max_tokens = config.max_position_embeddings;
  const std::string st_path = dir + "/sentence_bert_config.json";
  common::Env* env = common::Env::Default();
  if (env->FileExists(st_path)) {
    QS_ASSIGN_OR_RETURN(std::string text, env->ReadFileToString(st_path));
    QS_RETURN_IF_ERROR(common::CheckJsonNesting(st_path, text));
    auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    auto it = j.is_object() ? j.find("max_seq_length") : j.end();
    if (j.is_discarded() || (it != j.end() && !it->is_number_integer())) {
      return absl::InvalidArgumentError(st_path + ": max_seq_length must be an integer");
    }
    if (it != j.end()) max_tokens = std::min<int64_t>(max_tokens, it->get<int64_t>());
  } else if (auto t = tok.truncation_max_length(); t.has_value()) {
    max_tokens = std::min<int64_t>(max_tokens, *t);
  }
  if (max_tokens < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": the encoder's maximum input length is ", max_tokens,
        " (max_seq_length / truncation.max_length / max_position_embeddings); it must be >= 2"));
  }
  return max_tokens;
}

// Quantizer::Calibrate over `texts`: each tokenized as Score does and run through the model
// once (the output is not used), reporting phase "calibrate".
absl::Status CalibrateModel(const loader::LoadedModel& m, const models::Tokenizer& tok,
                            const std::vector<std::string>& texts, int32_t num_threads,
                            const LoadProgressCallback& on_progress) {
  const std::string& method = m.quantizer->quant_method();
  if (texts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "calibration_texts: quant_method '", method,
        "' measures activation scales on sample texts; pass at least one"));
  }
  const int64_t total = static_cast<int64_t>(texts.size());
  auto report = [&](int64_t done) {
    if (on_progress) {
      on_progress({.phase = "calibrate", .tensors_done = done, .tensors_total = total});
    }
  };
  report(0);
  if (num_threads > 0) at::set_num_threads(num_threads);
  models::Module& root = m.causal_lm ? static_cast<models::Module&>(*m.causal_lm)
                                     : static_cast<models::Module&>(*m.encoder);
  const int64_t context = m.config.max_position_embeddings;
  return m.quantizer->Calibrate(root, [&]() -> absl::Status {
    c10::InferenceMode inference;
    for (int64_t i = 0; i < total; ++i) {
      const std::string field = absl::StrCat("calibration_texts[", i, "]");
      std::vector<int32_t> ids = tok.Encode(texts[i], /*add_special_tokens=*/true);
      const int64_t n = static_cast<int64_t>(ids.size());
      if (n == 0 || n > context) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ": ", n, " tokens; each calibration text needs 1 to ", context,
            " tokens (the model's context)"));
      }
      QS_RETURN_IF_ERROR(common::TorchCall(field, [&] {
        at::Tensor input = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong)
                               .view({1, n})
                               .to(m.device);
        if (m.causal_lm) {
          models::KvCache cache = m.causal_lm->NewCache(n);
          m.causal_lm->Forward(input, cache, /*last_only=*/false);
        } else {
          m.encoder->Forward(input, at::ones({1, n}, input.options()));
        }
      }));
      report(i + 1);
    }
    return absl::OkStatus();
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServableModel>> LoadServableModel(
    const LoadOptions& options, const LoadProgressCallback& on_progress) {
  loader::LoadPipelineOptions lo;
  QS_ASSIGN_OR_RETURN(lo.max_memory, loader::ParseMaxMemory(options.max_memory_json));
  lo.model_dir = options.path;
  lo.quantization_config_json = options.quantization_config_json;
  lo.dtype = options.dtype;
  lo.device = options.device_map;
  lo.has_calibration_texts = !options.calibration_texts.empty();
  lo.activation_bits = options.activation_bits;
  // "ready" is reported here, once calibration (if any) is done too.
  LoadProgress last;
  auto loaded = loader::RunLoadPipeline(lo, [&](const loader::LoadPipelineProgress& p) {
    last = {p.phase, p.tensors_done, p.tensors_total, p.bytes_done, p.bytes_total};
    if (on_progress && p.phase != "ready") on_progress(last);
  });
  if (!loaded.ok()) return loaded.status();

  const std::string tokenizer_path = options.path + "/tokenizer.json";
  auto tokenizer = models::Tokenizer::FromFile(tokenizer_path);
  if (!tokenizer.ok()) return common::Annotate(tokenizer.status(), tokenizer_path);
  std::shared_ptr<const models::Tokenizer> tok(std::move(*tokenizer));
  if (loaded->quantizer->WantsCalibration()) {
    const auto start = std::chrono::steady_clock::now();
    QS_RETURN_IF_ERROR(CalibrateModel(*loaded, *tok, options.calibration_texts,
                                      options.num_threads, on_progress));
    loaded->seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (on_progress) on_progress(last);

  ModelDescription description = Describe(*loaded);
  {
    // The tokenizer loaded above, so the read succeeds; an empty fingerprint input otherwise.
    const std::string bytes =
        common::Env::Default()->ReadFileToString(tokenizer_path).value_or(std::string());
    description.tokenizer_fingerprint =
        absl::StrCat(absl::Hex(common::StableHash64({bytes}), absl::kZeroPad16));
  }
  QS_LOG(INFO) << "model loaded" << common::Kv("model", options.name)
               << common::Kv("architecture", description.architecture)
               << common::Kv("quant_method", description.quant_method)
               << common::Kv("dtype", description.dtype) << common::Kv("device", description.device)
               << common::Kv("parameters", description.parameters)
               << common::Kv("memory_bytes", description.memory_footprint_bytes)
               << common::Kv("peak_load_rss_bytes", description.peak_load_memory_bytes)
               << common::Kv("seconds", description.load_seconds);
  auto model = std::make_shared<const loader::LoadedModel>(*std::move(loaded));
  if (model->encoder) {
    QS_ASSIGN_OR_RETURN(int64_t max_tokens, EncoderMaxTokens(options.path, model->config, *tok));
    return std::unique_ptr<ServableModel>(new EncoderServable(
        std::move(description), tok, model, options.path, max_tokens, options));
  }
  std::vector<int32_t> eos = model->config.eos_token_ids;
  if (eos.empty() && tok->eos_id().has_value()) eos.push_back(*tok->eos_id());
  return std::unique_ptr<ServableModel>(new CausalLmServable(
      std::move(description), tok, model, options.path, std::move(eos), options));
}

std::string DescribeDevices() {
  std::string out = absl::StrCat("cpu (", at::get_num_threads(), " threads)");
  if (at::hasCUDA()) absl::StrAppend(&out, ", cuda");
  return out;
}

std::vector<std::string> SupportedQuantMethods() {
  return quant::BuiltinQuantizerRegistry().methods();
}

}  // namespace quantserve::engine

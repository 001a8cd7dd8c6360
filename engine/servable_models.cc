// The ServableModel implementations (causal LM and encoder) and LoadServableModel.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <chrono>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/env.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "engine/engine_api.h"
#include "engine/generation_scheduler.h"
#include "loader/load_pipeline.h"
#include "loader/model_saver.h"
#include "models/tokenizer/tokenizer.h"
#include "quant/quantizer_registry.h"

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
                   std::vector<int32_t> eos_ids, int32_t num_threads)
      : CausalLmServable(std::move(description), tok, loaded, std::move(source_dir),
                         loaded->causal_lm, std::move(eos_ids), num_threads) {}

 private:
  CausalLmServable(ModelDescription description, std::shared_ptr<const models::Tokenizer> tok,
                   std::shared_ptr<const loader::LoadedModel> loaded, std::string source_dir,
                   std::shared_ptr<const models::LlamaForCausalLM> model,
                   std::vector<int32_t> eos_ids, int32_t num_threads)
      : ServableBase(std::move(description), tok, std::move(loaded), std::move(source_dir)),
        model_(model),
        num_threads_(num_threads),
        scheduler_({.model = model,
                    .tokenizer = tok,
                    .eos_token_ids = std::move(eos_ids),
                    .context_length = model->config().max_position_embeddings,
                    .num_threads = num_threads}) {}

 public:
  std::unique_ptr<GenerationHandle> Generate(GenerateParams params,
                                             std::shared_ptr<GenerateObserver> observer) override {
    return scheduler_.Generate(std::move(params), std::move(observer));
  }

  absl::StatusOr<EmbedResult> Embed(const EmbedParams&) override { return WrongTask("Embed"); }

  absl::StatusOr<ScoreResult> Score(const ScoreParams& params) override {
    QS_RETURN_IF_ERROR(CheckOpen());
    if (num_threads_ > 0) at::set_num_threads(num_threads_);  // this calling thread only
    ScoreResult out;
    out.token_ids = params.input_ids;
    if (out.token_ids.empty()) out.token_ids = tokenizer_->Encode(params.text, params.add_special_tokens);
    const int64_t n = static_cast<int64_t>(out.token_ids.size());
    if (n < 2) {
      return absl::InvalidArgumentError(
          "text: needs at least 2 tokens to score (each token is scored given its prefix)");
    }
    const int64_t context = model_->config().max_position_embeddings;
    if (n > context) {
      return absl::InvalidArgumentError(absl::StrCat("text: ", n, " tokens exceed the model's context of ",
                                                     context));
    }
    for (int32_t id : out.token_ids) {
      if (id < 0 || id >= description_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("input_ids: token id ", id,
                                                       " is outside the vocabulary"));
      }
    }
    QS_RETURN_IF_ERROR(common::TorchCall("score", [&] {
      c10::InferenceMode inference;
      models::KvCache cache = model_->NewCache(n);
      at::Tensor ids = at::tensor(std::vector<int64_t>(out.token_ids.begin(), out.token_ids.end()),
                                  at::kLong)
                           .view({1, n})
                           .to(model_->model->embed_tokens->weight.device());
      at::Tensor hidden = model_->ForwardHidden(ids, cache);  // [n, hidden]
      at::Tensor targets = ids.squeeze(0).narrow(0, 1, n - 1).unsqueeze(1);
      // The output layer in row chunks: [n, vocab] float logits for a long text would be
      // gigabytes for a large vocabulary.
      constexpr int64_t kRows = 256;
      out.logprobs.reserve(n - 1);
      for (int64_t row = 0; row < n - 1; row += kRows) {
        const int64_t rows = std::min(kRows, n - 1 - row);
        at::Tensor logits = model_->lm_head->Forward(hidden.narrow(0, row, rows)).to(at::kFloat);
        at::Tensor lp = at::log_softmax(logits, -1)
                            .gather(1, targets.narrow(0, row, rows))
                            .squeeze(1)
                            .to(at::kCPU);
        out.logprobs.insert(out.logprobs.end(), lp.const_data_ptr<float>(),
                            lp.const_data_ptr<float>() + rows);
      }
    }));
    double sum = 0;
    for (float v : out.logprobs) sum += v;
    out.perplexity = std::exp(-sum / static_cast<double>(out.logprobs.size()));
    return out;
  }

  void Shutdown() override {
    shut_down_.store(true);
    scheduler_.Shutdown();
  }

 private:
  std::shared_ptr<const models::LlamaForCausalLM> model_;
  int32_t num_threads_;
  GenerationScheduler scheduler_;
};

class EncoderServable final : public ServableBase {
 public:
  EncoderServable(ModelDescription description, std::shared_ptr<const models::Tokenizer> tok,
                  std::shared_ptr<const loader::LoadedModel> loaded, std::string source_dir,
                  int64_t max_tokens, int32_t num_threads)
      : ServableBase(std::move(description), std::move(tok), loaded, std::move(source_dir)),
        model_(loaded->encoder),
        max_tokens_(max_tokens),
        num_threads_(num_threads) {}

  std::unique_ptr<GenerationHandle> Generate(GenerateParams,
                                             std::shared_ptr<GenerateObserver> observer) override {
    observer->OnFinish(WrongTask("Generate"));
    return std::make_unique<NoopHandle>();
  }

  absl::StatusOr<ScoreResult> Score(const ScoreParams&) override { return WrongTask("Score"); }

  absl::StatusOr<EmbedResult> Embed(const EmbedParams& params) override {
    QS_RETURN_IF_ERROR(CheckOpen());
    if (num_threads_ > 0) at::set_num_threads(num_threads_);  // this calling thread only
    std::string pooling = params.pooling.empty() ? description_.default_pooling : params.pooling;
    if (pooling != "mean" && pooling != "cls" && pooling != "last") {
      return absl::InvalidArgumentError(
          absl::StrCat("pooling: '", pooling, "' is not supported (mean, cls, last)"));
    }
    EmbedResult out;
    for (const std::string& text : params.texts) {
      std::vector<int32_t> ids = tokenizer_->Encode(text, /*add_special_tokens=*/true);
      if (static_cast<int64_t>(ids.size()) > max_tokens_) {
        // Truncate the content but keep the closing special token ([SEP]), as HF truncation.
        const int32_t last = ids.back();
        ids.resize(max_tokens_ - 1);
        ids.push_back(last);
      }
      out.prompt_tokens += static_cast<int32_t>(ids.size());
      const int64_t t = static_cast<int64_t>(ids.size());
      QS_RETURN_IF_ERROR(common::TorchCall("embed", [&] {
        c10::InferenceMode inference;
        at::Tensor input = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong)
                               .view({1, t})
                               .to(model_->embeddings->word_embeddings->weight.device());
        at::Tensor mask = at::ones({1, t}, input.options());
        at::Tensor pooled =
            models::PoolEmbeddings(model_->Forward(input, mask), mask, pooling, params.normalize)
                .to(at::kCPU)
                .squeeze(0);
        out.embeddings.emplace_back(pooled.const_data_ptr<float>(),
                                    pooled.const_data_ptr<float>() + pooled.numel());
      }));
    }
    return out;
  }

  void Shutdown() override { shut_down_.store(true); }

 private:
  class NoopHandle final : public GenerationHandle {
   public:
    void Cancel() override {}
  };

  std::shared_ptr<const models::BertModel> model_;
  int64_t max_tokens_;
  int32_t num_threads_;
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
        std::move(description), tok, model, options.path, max_tokens, options.num_threads));
  }
  std::vector<int32_t> eos = model->config.eos_token_ids;
  if (eos.empty() && tok->eos_id().has_value()) eos.push_back(*tok->eos_id());
  return std::unique_ptr<ServableModel>(new CausalLmServable(
      std::move(description), tok, model, options.path, std::move(eos), options.num_threads));
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

#include "loader/load_pipeline.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/byte_size.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "loader/checkpoint.h"
#include "quant/quantized_linear.h"
#include "loader/dtype.h"
#include "common/json_nesting.h"

namespace quantserve::loader {

std::optional<c10::ScalarType> ToScalarType(Dtype d) {
  switch (d) {
    case Dtype::kBool: return c10::ScalarType::Bool;
    case Dtype::kU8: return c10::ScalarType::Byte;
    case Dtype::kI8: return c10::ScalarType::Char;
    case Dtype::kI16: return c10::ScalarType::Short;
    case Dtype::kI32: return c10::ScalarType::Int;
    case Dtype::kI64: return c10::ScalarType::Long;
    case Dtype::kU16: return c10::ScalarType::UInt16;
    case Dtype::kU32: return c10::ScalarType::UInt32;
    case Dtype::kU64: return c10::ScalarType::UInt64;
    case Dtype::kF16: return c10::ScalarType::Half;
    case Dtype::kBf16: return c10::ScalarType::BFloat16;
    case Dtype::kF32: return c10::ScalarType::Float;
    case Dtype::kF64: return c10::ScalarType::Double;
    case Dtype::kF8E4M3: return c10::ScalarType::Float8_e4m3fn;
    case Dtype::kF8E5M2: return c10::ScalarType::Float8_e5m2;
    default: return std::nullopt;
  }
}

namespace {

bool IsPlainFloat(Dtype d) {
  return d == Dtype::kF16 || d == Dtype::kBf16 || d == Dtype::kF32 || d == Dtype::kF64;
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Checkpoint tensors transformers ignores on load for these architectures
// (_keys_to_ignore_on_load_unexpected and heads AutoModel drops).
bool IsIgnorableUnexpected(const models::ModelConfig& config, const std::string& name) {
  if (absl::EndsWith(name, "rotary_emb.inv_freq")) return true;
  if (config.architecture == models::Architecture::kBertModel) {
    return name == "embeddings.position_ids" || absl::StartsWith(name, "pooler.") ||
           absl::StartsWith(name, "cls.");
  }
  return false;
}

// Maps a checkpoint key to the model's name space: BERT checkpoints saved from a task model
// carry the `bert.` base-model prefix, which transformers strips when loading BertModel.
std::string CanonicalName(const models::ModelConfig& config, const std::string& key) {
  if (config.architecture == models::Architecture::kBertModel && absl::StartsWith(key, "bert.")) {
    return key.substr(5);
  }
  return key;
}

std::string ListNames(const std::vector<std::string>& names) {
  constexpr size_t kMax = 20;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kMax));
  std::string out = absl::StrJoin(shown, ", ");
  if (names.size() > kMax) absl::StrAppend(&out, ", ... (", names.size() - kMax, " more)");
  return out;
}

class Stopwatch {
 public:
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Copies one checkpoint tensor to `device`/`dtype`. The source bytes live in the mmap and may
// be unaligned for their element type (safetensors only aligns the data section start).
absl::StatusOr<at::Tensor> MaterializeTensor(const CheckpointTensor& t, c10::ScalarType src,
                                             c10::ScalarType dst, c10::Device device) {
  absl::Span<const uint8_t> data = t.data();
  const size_t elem = c10::elementSize(src);
  at::Tensor out;
  QS_RETURN_IF_ERROR(common::TorchCall(
      absl::StrCat("tensor '", t.name(), "' in ", t.shard->path()), [&] {
        at::Tensor view;
        if (reinterpret_cast<uintptr_t>(data.data()) % elem == 0) {
          view = at::from_blob(const_cast<uint8_t*>(data.data()), t.info->shape,
                               at::TensorOptions().dtype(src));
        } else {
          view = at::empty(t.info->shape, at::TensorOptions().dtype(src));
          std::memcpy(view.data_ptr(), data.data(), data.size());
        }
        out = view.to(at::TensorOptions().dtype(dst).device(device), /*non_blocking=*/false,
                      /*copy=*/true);
      }));
  return out;
}

// A CPU tensor viewing the mapped bytes of `t` when they are aligned for `dtype` (else a copy).
// Valid until the shard's pages are released; callers must not keep it.
absl::StatusOr<at::Tensor> MappedTensor(const CheckpointTensor& t, c10::ScalarType dtype) {
  absl::Span<const uint8_t> data = t.data();
  if (reinterpret_cast<uintptr_t>(data.data()) % c10::elementSize(dtype) != 0) {
    return MaterializeTensor(t, dtype, dtype, c10::kCPU);
  }
  at::Tensor out;
  QS_RETURN_IF_ERROR(common::TorchCall(
      absl::StrCat("tensor '", t.name(), "' in ", t.shard->path()), [&] {
        out = at::from_blob(const_cast<uint8_t*>(data.data()), t.info->shape,
                            at::TensorOptions().dtype(dtype));
      }));
  return out;
}

std::string DeviceKey(const c10::Device& d) {
  return d.is_cuda() ? absl::StrCat("cuda:", d.has_index() ? d.index() : 0) : "cpu";
}

absl::Status CheckFits(int64_t estimate, const c10::Device& device,
                       const std::map<std::string, int64_t>& max_memory, double fraction) {
  const std::string key = DeviceKey(device);
  auto it = max_memory.find(key);
  if (it != max_memory.end()) {
    const auto budget = static_cast<int64_t>(static_cast<double>(it->second) * fraction);
    if (estimate > budget) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the model needs about ", estimate / 1000000, " MB on ", key,
          " once loaded, more than max_memory allows (", budget / 1000000, " MB",
          fraction < 1.0 ? absl::StrCat(" = ", fraction, " of ", it->second / 1000000,
                                        " MB; the rest is kept for quantization buffers")
                         : std::string(),
          ")"));
    }
  }
  if (device.is_cpu()) {
    const int64_t available = AvailableHostMemoryBytes();
    if (available >= 0 && estimate > available) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the model needs about ", estimate / 1000000, " MB of host memory once loaded, but only ",
          available / 1000000, " MB are available"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, int64_t>> ParseMaxMemory(const std::string& json_text) {
  std::map<std::string, int64_t> out;
  if (json_text.find_first_not_of(" \t\r\n") == std::string::npos) return out;
  QS_RETURN_IF_ERROR(common::CheckJsonNesting("max_memory", json_text));
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("max_memory must be a JSON object like {\"cpu\": \"8GiB\"}");
  }
  for (const auto& [device, value] : j.items()) {
    std::string key = device;
    int index = 0;
    if (key == "disk") {
      return absl::InvalidArgumentError(
          "max_memory.disk: offloading to disk is not supported; give cpu and GPU budgets");
    }
    if (absl::SimpleAtoi(key, &index) && index >= 0) {
      key = absl::StrCat("cuda:", index);
    } else if (key == "cuda") {
      key = "cuda:0";
    } else if (key != "cpu" && !(absl::StartsWith(key, "cuda:") &&
                                 absl::SimpleAtoi(key.substr(5), &index) && index >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_memory: unknown device '", device, "' (expected \"cpu\", a GPU index or \"cuda:N\")"));
    }
    int64_t bytes = -1;
    if (value.is_number_integer()) {
      bytes = value.get<int64_t>();
    } else if (value.is_string()) {
      bytes = common::ParseByteSize(value.get<std::string>()).value_or(-1);
    }
    if (bytes < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_memory.", device, " must be a byte count or a size like \"8GiB\" / \"500MB\" (got ",
          value.dump(), ")"));
    }
    out[key] = bytes;
  }
  return out;
}

int64_t AvailableHostMemoryBytes() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kb = -1;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    long long v = 0;
    if (std::sscanf(line, "MemAvailable: %lld kB", &v) == 1) {
      kb = v;
      break;
    }
  }
  std::fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ReadSafetensorsFile(common::Env* env,
                                                                      const std::string& path) {
  QS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(env, path));
  std::map<std::string, at::Tensor> out;
  for (const TensorInfo& info : file->tensors()) {
    const auto dtype = ToScalarType(info.dtype);
    if (!dtype.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", info.name, "' in ", path,
                                                     " has dtype ", DtypeName(info.dtype),
                                                     ", which cannot be loaded"));
    }
    absl::Span<const uint8_t> data = file->TensorData(info);
    QS_RETURN_IF_ERROR(common::TorchCall(absl::StrCat("tensor '", info.name, "' in ", path), [&] {
      at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(*dtype));
      if (!data.empty()) std::memcpy(t.data_ptr(), data.data(), data.size());
      out.emplace(info.name, std::move(t));
    }));
  }
  return out;
}

int64_t CurrentRssBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long pages_total = 0, pages_resident = 0;
  int n = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(f);
  if (n != 2) return 0;
  return static_cast<int64_t>(pages_resident) * sysconf(_SC_PAGESIZE);
}

absl::StatusOr<c10::ScalarType> ResolveDtype(const std::string& requested,
                                             const std::string& checkpoint_dtype) {
  std::string name = requested.empty() ? "auto" : requested;
  if (name == "auto") name = checkpoint_dtype.empty() ? "float32" : checkpoint_dtype;
  if (name == "float32" || name == "float") return c10::ScalarType::Float;
  if (name == "bfloat16") return c10::ScalarType::BFloat16;
  if (name == "float16" || name == "half") return c10::ScalarType::Half;
  if (requested == "auto" || requested.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json torch_dtype '", checkpoint_dtype,
        "' cannot be served; pass dtype float32, bfloat16 or float16"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "dtype '", requested, "' is not supported (allowed: auto, float32, bfloat16, float16)"));
}

absl::StatusOr<c10::Device> ResolveDevice(const std::string& requested) {
  std::string name = requested.empty() ? "cpu" : requested;
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name == "auto") {
    return at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    int index = 0;
    if (name != "cuda") {
      const std::string digits = name.substr(5);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos ||
          digits.size() > 3) {
        return absl::InvalidArgumentError(absl::StrCat("device_map '", requested,
                                                       "' is not a device (cpu, auto, cuda:N)"));
      }
      index = std::stoi(digits);
    }
    if (!at::hasCUDA()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device_map '", requested, "' asks for CUDA but this process has no CUDA device"));
    }
    if (index >= static_cast<int>(at::getNumGPUs())) {
      return absl::FailedPreconditionError(absl::StrCat("device_map '", requested, "': this process has ",
                                                        at::getNumGPUs(), " CUDA device(s)"));
    }
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device_map '", requested, "' is not supported (allowed: cpu, auto, cuda, cuda:N)"));
}

absl::StatusOr<LoadedModel> RunLoadPipeline(
    const LoadPipelineOptions& options,
    const std::function<void(const LoadPipelineProgress&)>& on_progress) {
  Stopwatch clock;
  // Return freed heap to the OS first, so the baseline is honest and growth is measured.
  ::malloc_trim(0);
  const int64_t rss_start = CurrentRssBytes();
  int64_t rss_peak = rss_start;
  auto report = [&](LoadPipelineProgress p) {
    if (on_progress) on_progress(p);
  };
  common::Env* env = options.env;
  const quant::QuantizerRegistry& registry =
      options.registry ? *options.registry : quant::BuiltinQuantizerRegistry();

  // 1. Configuration.
  report({.phase = "config"});
  if (!env->IsDirectory(options.model_dir)) {
    return absl::NotFoundError(absl::StrCat("model directory ", options.model_dir, " not found"));
  }
  const std::string config_path = options.model_dir + "/config.json";
  auto config_text = env->ReadFileToString(config_path);
  if (!config_text.ok()) {
    return common::Annotate(config_text.status(), "reading config.json");
  }
  std::string generation_text;
  const std::string generation_path = options.model_dir + "/generation_config.json";
  if (env->FileExists(generation_path)) {
    QS_ASSIGN_OR_RETURN(generation_text, env->ReadFileToString(generation_path));
  }
  LoadedModel out;
  QS_ASSIGN_OR_RETURN(out.config, models::ParseModelConfig(*config_text, generation_text));
  const models::ModelConfig& config = out.config;

  // optimum-quanto's own serialization has no quantization_config in config.json but a
  // quantization map beside the weights (QuantizedModelForCausalLM.save_pretrained).
  std::string checkpoint_quantization = config.quantization_config_json;
  const std::string qmap_path = options.model_dir + "/quanto_qmap.json";
  if (checkpoint_quantization.empty() && env->FileExists(qmap_path)) {
    QS_ASSIGN_OR_RETURN(std::string qmap_text, env->ReadFileToString(qmap_path));
    if (absl::Status s = common::CheckJsonNesting(qmap_path, qmap_text); !s.ok()) {
      return absl::DataLossError(s.message());
    }
    nlohmann::json qmap = nlohmann::json::parse(qmap_text, nullptr, /*allow_exceptions=*/false);
    if (qmap.is_discarded() || !qmap.is_object()) {
      return absl::DataLossError(absl::StrCat(qmap_path, " is not a JSON object"));
    }
    checkpoint_quantization =
        nlohmann::json{{"quant_method", "quanto"}, {"quantization_map", qmap}}.dump();
  }
  // Headers only (the tensors are mapped, not read): their metadata goes to the quantizer.
  QS_ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(env, options.model_dir));

  // 2-4. Quantizer, environment, dtype and device.
  report({.phase = "quantizer"});
  QS_ASSIGN_OR_RETURN(out.quantizer,
                      registry.Create(options.quantization_config_json, checkpoint_quantization));
  quant::LoadTarget target;
  target.checkpoint_is_prequantized = !checkpoint_quantization.empty();
  for (const auto& shard : checkpoint->shards()) {
    for (const auto& [key, value] : shard->metadata()) target.checkpoint_metadata[key] = value;
  }
  target.device_map = options.device_map;
  target.has_calibration_texts = options.has_calibration_texts;
  target.activation_bits = options.activation_bits;
  QS_ASSIGN_OR_RETURN(target.dtype, ResolveDtype(options.dtype, config.torch_dtype));
  QS_ASSIGN_OR_RETURN(target.device, ResolveDevice(options.device));
  QS_RETURN_IF_ERROR(out.quantizer->ValidateEnvironment(target));
  target.dtype = out.quantizer->UpdateTorchDtype(target.dtype);
  out.dtype = target.dtype;
  out.device = target.device;

  // 5. Skeleton on the meta device, then the quantizer swaps its modules in.
  report({.phase = "skeleton"});
  models::Module* root = nullptr;
  QS_RETURN_IF_ERROR(common::TorchCall("building the model skeleton", [&] {
    if (config.architecture == models::Architecture::kBertModel) {
      out.encoder = std::make_shared<models::BertModel>(config, target.dtype);
      root = out.encoder.get();
    } else {
      out.causal_lm = std::make_shared<models::LlamaForCausalLM>(config, target.dtype);
      root = out.causal_lm.get();
    }
  }));
  QS_RETURN_IF_ERROR(out.quantizer->ProcessModelBeforeWeightLoading(*root, target));

  // 6. Reconcile the checkpoint with the expected parameters.
  std::unordered_map<std::string, models::ParamSlot> slots;
  std::vector<std::string> tied;
  for (auto& named : root->NamedParameters()) {
    if (!named.slot.tied_to.empty()) {
      tied.push_back(named.name);
      continue;
    }
    // Quantization state is produced from the float weight unless the checkpoint carries it.
    if (named.slot.derived && !target.checkpoint_is_prequantized) continue;
    slots.emplace(named.name, named.slot);
  }
  std::vector<const CheckpointTensor*> to_load;
  std::vector<std::string> unexpected;
  std::unordered_set<std::string> seen;
  for (const CheckpointTensor& t : checkpoint->tensors()) {
    const std::string name = CanonicalName(config, t.name());
    if (slots.count(name) != 0) {
      if (!seen.insert(name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("checkpoint has tensor '", name, "' twice (with and without prefix)"));
      }
      to_load.push_back(&t);
    } else if (std::find(tied.begin(), tied.end(), name) != tied.end() ||
               IsIgnorableUnexpected(config, name)) {
      continue;  // tied weights are re-bound after loading, as transformers does
    } else {
      unexpected.push_back(t.name());
    }
  }
  std::vector<std::string> missing;
  for (auto it = slots.begin(); it != slots.end();) {
    if (seen.count(it->first) != 0) {
      ++it;
    } else if (it->second.optional) {
      it = slots.erase(it);  // the module fills a default in ProcessModelAfterWeightLoading
    } else {
      missing.push_back(it->first);
      ++it;
    }
  }
  std::sort(missing.begin(), missing.end());
  if (!missing.empty() || !unexpected.empty()) {
    std::string msg = absl::StrCat("checkpoint ", checkpoint->source_path(),
                                   " does not match ", config.architecture_name, ":");
    if (!missing.empty()) {
      absl::StrAppend(&msg, " missing tensors (", missing.size(), "): ", ListNames(missing), ";");
    }
    if (!unexpected.empty()) {
      absl::StrAppend(&msg, " unexpected tensors (", unexpected.size(), "): ",
                      ListNames(unexpected), ";");
    }
    return absl::InvalidArgumentError(msg);
  }

  // Will it fit? Refuse before reading anything rather than dying halfway.
  int64_t estimate = 0;
  for (const CheckpointTensor* t : to_load) {
    const std::string name = CanonicalName(config, t->name());
    // Packed tensors of a pre-quantized checkpoint keep their size; the rest is estimated
    // from the skeleton (after quantization, in the compute dtype).
    estimate += target.checkpoint_is_prequantized && out.quantizer->CheckQuantizedParam(name)
                    ? static_cast<int64_t>(t->info->byte_size())
                    : out.quantizer->EstimatedParamBytes(name, *slots.at(name).tensor);
  }
  QS_RETURN_IF_ERROR(CheckFits(estimate, target.device, options.max_memory,
                               out.quantizer->MaxMemoryFraction()));

  // 7. Stream tensors one at a time onto the target device.
  LoadPipelineProgress progress{.phase = "weights",
                                .tensors_total = static_cast<int64_t>(to_load.size())};
  for (const CheckpointTensor* t : to_load) progress.bytes_total += t->info->byte_size();
  report(progress);
  for (const CheckpointTensor* t : to_load) {
    const std::string name = CanonicalName(config, t->name());
    models::ParamSlot& slot = slots.at(name);
    const auto src = ToScalarType(t->info->dtype);
    if (!src.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t->name(), "' in ",
                                                     t->shard->path(), " has dtype ",
                                                     std::string(DtypeName(t->info->dtype)),
                                                     ", which cannot be loaded"));
    }
    if (out.quantizer->CheckQuantizedParam(name)) {
      // The quantizer reads the float weight straight from the mapped file (no host copy);
      // only its quantized state stays resident.
      QS_ASSIGN_OR_RETURN(at::Tensor value, MappedTensor(*t, *src));
      QS_RETURN_IF_ERROR(out.quantizer->CreateQuantizedParam(name, value, slot, target));
      // Quantizing frees float temporaries the size of the tensor; hand them back to the
      // OS now, or glibc's raised mmap threshold keeps them in the heap until the load ends.
      ::malloc_trim(0);
    } else {
      if (!IsPlainFloat(t->info->dtype)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", t->name(), "' in ", t->shard->path(), " has dtype ",
            std::string(DtypeName(t->info->dtype)), " but the model expects a floating-point tensor"));
      }
      const at::Tensor& meta = *slot.tensor;
      if (meta.sizes() != at::IntArrayRef(t->info->shape)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", t->name(), "' in ", t->shard->path(), " has shape ",
            ShapeString(t->info->shape), " but ", config.architecture_name, " expects ",
            ShapeString(meta.sizes())));
      }
      QS_ASSIGN_OR_RETURN(*slot.tensor,
                          MaterializeTensor(*t, *src, meta.scalar_type(), target.device));
    }
    t->shard->ReleaseTensorData(*t->info);
    rss_peak = std::max(rss_peak, CurrentRssBytes());
    progress.tensors_done += 1;
    progress.bytes_done += static_cast<int64_t>(t->info->byte_size());
    report(progress);
  }
  checkpoint.reset();

  // 8. Tie, post-process, verify nothing is left on the meta device.
  report({.phase = "post_process", .tensors_done = progress.tensors_done,
          .tensors_total = progress.tensors_total, .bytes_done = progress.bytes_done,
          .bytes_total = progress.bytes_total});
  if (out.causal_lm) out.causal_lm->FinishLoading();
  QS_RETURN_IF_ERROR(out.quantizer->ProcessModelAfterWeightLoading(*root, target));
  // Codes a quantized module keeps only inside its packed weight (ReleaseToPacked) are meta
  // tensors now: loaded, counted as parameters, not as bytes.
  std::unordered_set<const at::Tensor*> released;
  for (const auto& m : root->NamedModules()) {
    if (const auto* q = dynamic_cast<const quant::QuantizedLinear*>(m.module); q != nullptr) {
      for (const auto& p : m.module->NamedParameters()) {
        if (q->IsReleased(p.slot.tensor)) released.insert(p.slot.tensor);
      }
    }
  }
  std::unordered_set<const void*> counted;
  for (const auto& named : root->NamedParameters()) {
    const at::Tensor& t = *named.slot.tensor;
    if (released.count(named.slot.tensor) != 0) {
      out.parameters += t.numel();
      continue;
    }
    if (!t.defined() || t.is_meta()) {
      return absl::InternalError(absl::StrCat("parameter '", named.name, "' was not loaded"));
    }
    if (!counted.insert(t.data_ptr()).second) continue;  // tied: count once, like transformers
    out.parameters += t.numel();
    out.memory_footprint_bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  // Plus what quantized modules keep for their forward beyond their serialized state.
  for (const auto& m : root->NamedModules()) {
    if (const auto* q = dynamic_cast<const quant::QuantizedLinear*>(m.module); q != nullptr) {
      out.memory_footprint_bytes += q->runtime_bytes();
    }
  }
  out.peak_rss_growth_bytes = std::max<int64_t>(0, rss_peak - rss_start);
  out.seconds = clock.Seconds();
  report({.phase = "ready", .tensors_done = progress.tensors_done,
          .tensors_total = progress.tensors_total, .bytes_done = progress.bytes_done,
          .bytes_total = progress.bytes_total});
  return out;
}

}  // namespace quantserve::loader

#include "loader/model_saver.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <filesystem>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "loader/dtype.h"

namespace quantserve::loader {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// Files besides the weights that make the directory loadable on its own.
constexpr const char* kCopiedFiles[] = {
    "tokenizer.json",    "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.txt",             "vocab.json",
    "merges.txt",        "tokenizer.model",       "generation_config.json",
    "chat_template.jinja", "chat_template.json",  "preprocessor_config.json",
};

std::optional<Dtype> FromScalarType(c10::ScalarType t) {
  for (const DtypeInfo& info : AllDtypes()) {
    if (ToScalarType(info.dtype) == t) return info.dtype;
  }
  return std::nullopt;
}

}  // namespace

// One safetensors file: an 8-byte little-endian header length, the JSON header (padded with
// spaces to a multiple of 8 so every tensor stays 8-byte aligned), then the tensor bytes.
absl::Status WriteSafetensorsFile(const std::string& file,
                                  const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata,
                                  common::Env* env) {
  Json header;
  Json meta = Json::object();
  meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const auto dtype = FromScalarType(t.scalar_type());
    if (!dtype.has_value()) {
      return absl::InternalError(absl::StrCat("tensor '", name, "' has dtype ",
                                              c10::toString(t.scalar_type()),
                                              ", which safetensors cannot hold"));
    }
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", DtypeName(*dtype)},
                    {"shape", std::vector<int64_t>(t.sizes().begin(), t.sizes().end())},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  QS_ASSIGN_OR_RETURN(std::unique_ptr<common::WritableFile> f, env->NewWritableFile(file));
  char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>(text.size() >> (8 * i));
  QS_RETURN_IF_ERROR(f->Append(std::string_view(length, 8)));
  QS_RETURN_IF_ERROR(f->Append(text));
  for (const auto& [name, t] : tensors) {
    // One tensor at a time on the host: peak memory stays one tensor above the model.
    at::Tensor host;
    QS_RETURN_IF_ERROR(common::TorchCall(absl::StrCat("saving ", name), [&] {
      host = t.to(at::kCPU).contiguous();
    }));
    const size_t bytes = static_cast<size_t>(host.numel()) * host.element_size();
    QS_RETURN_IF_ERROR(f->Append(std::string_view(static_cast<const char*>(host.data_ptr()), bytes)));
  }
  QS_RETURN_IF_ERROR(f->Sync());
  return f->Close();
}

namespace {

absl::Status WriteText(common::Env* env, const std::string& path, std::string_view text) {
  QS_ASSIGN_OR_RETURN(std::unique_ptr<common::WritableFile> f, env->NewWritableFile(path));
  QS_RETURN_IF_ERROR(f->Append(text));
  QS_RETURN_IF_ERROR(f->Sync());
  return f->Close();
}

// The source config.json with the saved model's quantization_config and dtype.
absl::StatusOr<std::string> SavedConfig(common::Env* env, const std::string& source_dir,
                                        const LoadedModel& model) {
  const std::string path = common::JoinPath(source_dir, "config.json");
  absl::StatusOr<std::string> text = env->ReadFileToString(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  Json config = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::DataLossError(absl::StrCat(path, " is not a JSON object"));
  }
  const std::string quantization = model.quantizer->SerializedConfigJson();
  if (model.quantizer->quant_method() == "none" || quantization.empty()) {
    config.erase("quantization_config");
  } else {
    config["quantization_config"] = Json::parse(quantization);
  }
  const std::string dtype = TorchDtypeName(model.dtype);
  config["dtype"] = dtype;  // transformers 5 spelling
  if (config.contains("torch_dtype")) config["torch_dtype"] = dtype;
  return config.dump(2) + "\n";
}

}  // namespace

std::string TorchDtypeName(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::Half: return "float16";
    default: return "float32";
  }
}

absl::StatusOr<SaveModelResult> SaveModel(const LoadedModel& model, const std::string& source_dir,
                                          const SaveModelOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (options.output_dir.empty()) return absl::InvalidArgumentError("output directory is empty");
  if (options.max_shard_bytes <= 0) {
    return absl::InvalidArgumentError("max_shard_bytes must be positive");
  }
  const models::Module* root = model.causal_lm
                                   ? static_cast<const models::Module*>(model.causal_lm.get())
                                   : static_cast<const models::Module*>(model.encoder.get());
  if (root == nullptr || model.quantizer == nullptr) {
    return absl::FailedPreconditionError("the model is not loaded");
  }
  common::Env* env = options.env;
  const fs::path out = fs::absolute(options.output_dir).lexically_normal();
  if (env->FileExists(out.string())) {
    return absl::AlreadyExistsError(
        absl::StrCat(out.string(), " already exists and is a file; choose a new path"));
  }
  if (env->IsDirectory(out.string())) {
    absl::StatusOr<std::vector<std::string>> entries = env->ListDirectory(out.string());
    if (!entries.ok() || !entries->empty()) {
      return absl::AlreadyExistsError(absl::StrCat(
          out.string(), " already exists and is not an empty directory; choose a new path"));
    }
  }
  // Everything the quantizer says describes the model, before touching the disk.
  QS_ASSIGN_OR_RETURN(auto state, model.quantizer->SerializedState(*root));
  QS_ASSIGN_OR_RETURN(std::string config_text, SavedConfig(env, source_dir, model));

  // Shards as huggingface_hub's split_torch_state_dict_into_shards: in order, a new shard
  // when the next tensor would overflow a non-empty one.
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  int64_t shard_bytes = 0;
  SaveModelResult result;
  for (auto& entry : state) {
    const int64_t bytes = entry.second.numel() * static_cast<int64_t>(entry.second.element_size());
    if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += bytes;
    result.tensor_bytes += bytes;
    result.tensors += 1;
    shards.back().push_back(std::move(entry));
  }

  QS_RETURN_IF_ERROR(env->CreateDirs(out.parent_path().string()));
  const std::string tmp = (out.parent_path() / absl::StrCat(".", out.filename().string(),
                                                            ".saving-", ::getpid()))
                              .string();
  (void)env->RemoveAll(tmp);
  QS_RETURN_IF_ERROR(env->CreateDirs(tmp));
  // On any failure the temporary goes: nothing half-written stays under the model root.
  auto fail = [&](absl::Status s) {
    (void)env->RemoveAll(tmp);
    return s;
  };

  // transformers writes the same header metadata (torchao's, for every tensor) into each shard.
  std::vector<std::string> all_names;
  for (const auto& shard : shards) {
    for (const auto& [name, t] : shard) all_names.push_back(name);
  }
  const std::map<std::string, std::string> metadata = model.quantizer->SafetensorsMetadata(all_names);
  Json weight_map = Json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file =
        shards.size() == 1 ? "model.safetensors"
                           : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    for (const auto& [name, t] : shards[i]) weight_map[name] = file;
    absl::Status s = WriteSafetensorsFile(common::JoinPath(tmp, file), shards[i], metadata, env);
    if (!s.ok()) return fail(s);
    result.files.push_back(file);
  }
  if (shards.size() > 1) {
    Json index = {{"metadata", {{"total_parameters", model.parameters},
                                {"total_size", result.tensor_bytes}}},
                  {"weight_map", weight_map}};
    absl::Status s =
        WriteText(env, common::JoinPath(tmp, "model.safetensors.index.json"), index.dump(2) + "\n");
    if (!s.ok()) return fail(s);
    result.files.push_back("model.safetensors.index.json");
  }
  if (absl::Status s = WriteText(env, common::JoinPath(tmp, "config.json"), config_text); !s.ok()) {
    return fail(s);
  }
  result.files.push_back("config.json");
  for (const auto& [name, contents] : model.quantizer->ExtraSavedFiles()) {
    if (absl::Status s = WriteText(env, common::JoinPath(tmp, name), contents); !s.ok()) {
      return fail(s);
    }
    result.files.push_back(name);
  }
  for (const char* name : kCopiedFiles) {
    const std::string src = common::JoinPath(source_dir, name);
    if (!env->FileExists(src)) continue;
    absl::StatusOr<std::string> bytes = env->ReadFileToString(src);
    if (!bytes.ok()) return fail(bytes.status());
    if (absl::Status s = WriteText(env, common::JoinPath(tmp, name), *bytes); !s.ok()) {
      return fail(s);
    }
    result.files.push_back(name);
  }
  // Into place in one step (rename replaces an empty directory there).
  if (absl::Status s = env->RenameFile(tmp, out.string()); !s.ok()) return fail(s);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace quantserve::loader

#include "loader/checkpoint.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "common/json_nesting.h"

namespace quantserve::loader {
namespace {

using Json = nlohmann::json;

// This abseil's string_view is its own type, not std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr absl::string_view kPickledMessage =
    "pickled checkpoints are not loaded (no code execution from model files); convert to "
    "safetensors";

absl::Status CorruptIndex(absl::string_view index_path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(index_path, ": ", what));
}

// Names that hold pickled (torch.save) weights.
bool IsPickledWeights(std::string_view name) {
  return name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth") ||
         name.ends_with(".ckpt") || name.ends_with(".pkl") ||
         name == "pytorch_model.bin.index.json";
}

// A shard reference must be a plain "*.safetensors" file name: no directory part at all, so it
// can only name a file directly inside the model directory.
bool IsPlainShardName(std::string_view name) {
  return name.ends_with(".safetensors") && name != ".safetensors" &&
         name.find_first_of(std::string_view("/\\\0", 3)) == std::string_view::npos &&
         name != "." && name != "..";
}

// Parses the index, refusing duplicate keys at any depth: with "last one wins", one tensor
// listed twice could silently point at either shard.
absl::StatusOr<Json> ParseIndexJson(absl::string_view index_path, std::string_view text) {
  // nlohmann stops at a NUL as if the input ended there; valid JSON never has a raw NUL.
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return CorruptIndex(index_path, absl::StrCat("not valid JSON: NUL byte at offset ", nul));
  }
  if (const int depth = common::JsonNesting(text); depth > common::kMaxJsonNesting) {
    return CorruptIndex(index_path, absl::StrCat("not valid JSON: it nests ", depth,
                                                 " levels deep (at most ",
                                                 common::kMaxJsonNesting, ")"));
  }
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == Json::parse_event_t::object_end && !keys.empty()) {
      keys.pop_back();
    } else if (event == Json::parse_event_t::key && !keys.empty() && parsed.is_string() &&
               !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  Json index;
  try {
    index = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                        /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    return CorruptIndex(index_path, absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!duplicate.empty()) {
    return CorruptIndex(index_path, absl::StrCat("duplicate key \"", duplicate, "\""));
  }
  return index;
}

// weight_map as tensor name -> shard file name, validated for shape and shard names.
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(common::Env* env,
                                                                 const std::string& index_path) {
  absl::StatusOr<uint64_t> size = env->GetFileSize(index_path);
  if (!size.ok()) {
    return size.status();
  }
  if (*size > Checkpoint::kMaxIndexBytes) {
    return CorruptIndex(index_path, absl::StrCat("index is ", *size, " bytes, over the limit of ",
                                                 Checkpoint::kMaxIndexBytes));
  }
  absl::StatusOr<std::string> text = env->ReadFileToString(index_path);
  if (!text.ok()) {
    return text.status();
  }
  absl::StatusOr<Json> index = ParseIndexJson(index_path, *text);
  if (!index.ok()) {
    return index.status();
  }
  if (!index->is_object()) {
    return CorruptIndex(index_path,
                        absl::StrCat("not a JSON object (got ", index->type_name(), ")"));
  }
  auto it = index->find("weight_map");
  if (it == index->end() || !it->is_object()) {
    return CorruptIndex(index_path, "\"weight_map\" is missing or not a JSON object");
  }
  if (it->empty()) {
    return CorruptIndex(index_path, "\"weight_map\" is empty");
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, shard] : it->items()) {
    if (!shard.is_string()) {
      return CorruptIndex(index_path,
                          absl::StrCat("tensor \"", tensor, "\": shard is not a string (got ",
                                       shard.type_name(), ")"));
    }
    const std::string& shard_name = shard.get_ref<const std::string&>();
    if (!IsPlainShardName(shard_name)) {
      return CorruptIndex(
          index_path,
          absl::StrCat("tensor \"", tensor, "\": shard \"", shard_name,
                       "\" is not a plain *.safetensors file name inside the model directory "
                       "(paths, '..' and absolute names are refused)"));
    }
    weight_map.emplace(tensor, shard_name);
  }
  return weight_map;
}

}  // namespace

Checkpoint::Checkpoint(std::string dir, Layout layout, std::string source_path,
                       std::vector<std::unique_ptr<SafetensorsFile>> shards)
    : dir_(std::move(dir)),
      layout_(layout),
      source_path_(std::move(source_path)),
      shards_(std::move(shards)) {
  for (size_t s = 0; s < shards_.size(); ++s) {
    for (const TensorInfo& info : shards_[s]->tensors()) {
      index_.emplace(info.name, tensors_.size());
      tensors_.push_back(CheckpointTensor{shards_[s].get(), &info, s});
      total_tensor_bytes_ += info.byte_size();
    }
  }
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(common::Env* env,
                                                             const std::string& model_dir) {
  if (env == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": Checkpoint::Open: null env"));
  }
  if (!env->IsDirectory(model_dir)) {
    return absl::NotFoundError(
        absl::StrCat("model directory \"", model_dir, "\" does not exist or is not a directory"));
  }

  const std::string single_path = common::JoinPath(model_dir, kSingleFileName);
  if (env->FileExists(single_path)) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(env, single_path);
    if (!file.ok()) {
      return file.status();
    }
    std::vector<std::unique_ptr<SafetensorsFile>> shards;
    shards.push_back(*std::move(file));
    return std::unique_ptr<Checkpoint>(
        new Checkpoint(model_dir, Layout::kSingleFile, single_path, std::move(shards)));
  }

  const std::string index_path = common::JoinPath(model_dir, kIndexFileName);
  if (!env->FileExists(index_path)) {
    absl::StatusOr<std::vector<std::string>> entries = env->ListDirectory(model_dir);
    if (!entries.ok()) {
      return entries.status();
    }
    std::vector<std::string> pickled;
    for (const std::string& name : *entries) {
      if (IsPickledWeights(name)) {
        pickled.push_back(name);
      }
    }
    if (!pickled.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          model_dir, ": ", kPickledMessage, " (found ", absl::StrJoin(pickled, ", "), ")"));
    }
    return absl::NotFoundError(absl::StrCat(model_dir, ": no ", kSingleFileName, " or ",
                                            kIndexFileName, " in the model directory"));
  }

  absl::StatusOr<std::map<std::string, std::string>> weight_map = ReadWeightMap(env, index_path);
  if (!weight_map.ok()) {
    return weight_map.status();
  }

  // Open each distinct shard once, in file-name order.
  std::set<std::string> shard_names;
  for (const auto& [tensor, shard] : *weight_map) {
    shard_names.insert(shard);
  }
  std::vector<std::unique_ptr<SafetensorsFile>> shards;
  std::map<std::string, const SafetensorsFile*, std::less<>> shard_by_name;
  for (const std::string& shard_name : shard_names) {
    const std::string shard_path = common::JoinPath(model_dir, shard_name);
    if (!env->FileExists(shard_path)) {
      // Name a tensor that needs it, so the message says what the missing file costs.
      auto needed_by = std::find_if(weight_map->begin(), weight_map->end(),
                                    [&](const auto& kv) { return kv.second == shard_name; });
      return CorruptIndex(index_path, absl::StrCat("tensor \"", needed_by->first, "\": shard \"",
                                                   shard_name, "\" is missing (", shard_path, ")"));
    }
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(env, shard_path);
    if (!file.ok()) {
      return file.status();
    }
    shard_by_name.emplace(shard_name, file->get());
    shards.push_back(*std::move(file));
  }

  // The index and the shards must agree exactly: every indexed tensor is in its shard, and
  // every tensor of every shard is indexed to that shard (which also means no tensor is in two
  // shards).
  for (const auto& [tensor, shard_name] : *weight_map) {
    const SafetensorsFile* shard = shard_by_name.at(shard_name);
    if (shard->FindTensor(tensor) == nullptr) {
      return CorruptIndex(index_path,
                          absl::StrCat("tensor \"", tensor, "\": listed in shard \"", shard_name,
                                       "\", which has no such tensor (", shard->path(), ")"));
    }
  }
  for (const auto& [shard_name, shard] : shard_by_name) {
    for (const TensorInfo& info : shard->tensors()) {
      auto it = weight_map->find(info.name);
      if (it == weight_map->end()) {
        return CorruptIndex(
            index_path, absl::StrCat("tensor \"", info.name, "\": present in shard \"", shard_name,
                                     "\" but not listed in weight_map"));
      }
      if (it->second != shard_name) {
        return CorruptIndex(index_path,
                            absl::StrCat("tensor \"", info.name, "\": present in two shards, \"",
                                         shard_name, "\" and \"", it->second, "\""));
      }
    }
  }

  return std::unique_ptr<Checkpoint>(
      new Checkpoint(model_dir, Layout::kSharded, index_path, std::move(shards)));
}

const CheckpointTensor* Checkpoint::FindTensor(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<CheckpointTensor> Checkpoint::GetTensor(std::string_view name) const {
  const CheckpointTensor* tensor = FindTensor(name);
  if (tensor == nullptr) {
    return absl::NotFoundError(absl::StrCat(dir_, ": checkpoint has no tensor \"", Sv(name), "\""));
  }
  return *tensor;
}

absl::StatusOr<absl::Span<const uint8_t>> Checkpoint::GetTensorData(std::string_view name) const {
  absl::StatusOr<CheckpointTensor> tensor = GetTensor(name);
  if (!tensor.ok()) {
    return tensor.status();
  }
  return tensor->data();
}

}  // namespace quantserve::loader

#include "loader/safetensors_file.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "common/json_nesting.h"

namespace quantserve::loader {
namespace {

using Json = nlohmann::json;

constexpr uint64_t kPrefixBytes = 8;

// This abseil's string_view is its own type, not std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Every format error is DATA_LOSS and starts with the file path (and the tensor, if any).
absl::Status Corrupt(absl::string_view path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

absl::Status CorruptTensor(absl::string_view path, absl::string_view tensor,
                           absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": tensor \"", tensor, "\": ", what));
}

absl::string_view JsonTypeName(const Json& value) {
  if (value.is_number_unsigned() || value.is_number_integer()) {
    return "integer";
  }
  return value.type_name();
}

// `value` rendered for an error message, cut short if long. Arrays and objects are named, not
// printed: dump() recurses, and a hostile header can nest millions deep.
std::string Brief(const Json& value) {
  if (value.is_structured()) {
    return std::string(value.type_name());
  }
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
  if (text.size() > 64) {
    text.resize(61);
    text += "...";
  }
  return text;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A JSON integer >= 0 ("-0" included, as serde does), or nullopt.
std::optional<uint64_t> AsNonNegativeInteger(const Json& value) {
  if (value.is_number_unsigned()) {
    return value.get<uint64_t>();
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return std::nullopt;
}

// Parses the header, refusing duplicate keys (nlohmann would keep the last one silently, so
// two entries for one tensor could disagree with what another reader picks).
absl::StatusOr<Json> ParseHeaderJson(absl::string_view path, std::string_view text) {
  if (text.size() >= 3 && std::memcmp(text.data(), "\xEF\xBB\xBF", 3) == 0) {
    return Corrupt(path, "header is not valid JSON: it starts with a UTF-8 byte order mark");
  }
  // nlohmann stops at a NUL as if the input ended there, which would let bytes after it pass
  // unseen. Valid JSON has no raw NUL anywhere (inside strings it must be escaped).
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return Corrupt(path, absl::StrCat("header is not valid JSON: NUL byte at header offset ", nul));
  }
  if (const int depth = common::JsonNesting(text); depth > common::kMaxJsonNesting) {
    return Corrupt(path, absl::StrCat("header is not valid JSON: it nests ", depth,
                                      " levels deep (at most ", common::kMaxJsonNesting, ")"));
  }
  struct Frame {
    std::set<std::string> keys;
    std::string current_key;
  };
  std::vector<Frame> stack;
  std::string duplicate_error;
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        stack.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!stack.empty()) {
          stack.pop_back();
        }
        break;
      case Json::parse_event_t::key: {
        if (stack.empty() || !parsed.is_string()) {
          break;
        }
        std::string key = parsed.get<std::string>();
        if (!stack.back().keys.insert(key).second && duplicate_error.empty()) {
          const std::string& entry = stack.size() == 1 ? key : stack.front().current_key;
          if (entry == "__metadata__") {
            duplicate_error = stack.size() == 1
                                  ? std::string("\"__metadata__\" appears twice in the header")
                                  : absl::StrCat("\"__metadata__\": duplicate key \"", key, "\"");
          } else if (stack.size() == 1) {
            duplicate_error = absl::StrCat("tensor \"", key, "\": appears twice in the header");
          } else {
            duplicate_error = absl::StrCat("tensor \"", stack.front().current_key,
                                           "\": duplicate key \"", key, "\" in its entry");
          }
        }
        stack.back().current_key = std::move(key);
        break;
      }
      default:
        break;
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                         /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    return Corrupt(path, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!duplicate_error.empty()) {
    return Corrupt(path, duplicate_error);
  }
  return header;
}

// Validates one tensor entry on its own (everything except its relation to other tensors).
absl::StatusOr<TensorInfo> ParseTensorEntry(absl::string_view path, const std::string& name,
                                            const Json& entry, uint64_t data_size,
                                            uint64_t data_offset) {
  if (!entry.is_object()) {
    return CorruptTensor(
        path, name, absl::StrCat("entry is not a JSON object (got ", JsonTypeName(entry), ")"));
  }
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return CorruptTensor(path, name,
                           absl::StrCat("unexpected key \"", key,
                                        "\" (an entry has exactly dtype, shape, data_offsets)"));
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) {
      return CorruptTensor(path, name, absl::StrCat("missing \"", key, "\""));
    }
  }

  TensorInfo info;
  info.name = name;

  const Json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return CorruptTensor(path, name,
                         absl::StrCat("dtype is not a string (got ", Brief(dtype), ")"));
  }
  std::optional<Dtype> parsed_dtype = ParseDtype(dtype.get_ref<const std::string&>());
  if (!parsed_dtype.has_value()) {
    return CorruptTensor(path, name, absl::StrCat("unknown dtype ", Brief(dtype)));
  }
  info.dtype = *parsed_dtype;

  const Json& shape = entry["shape"];
  if (!shape.is_array()) {
    return CorruptTensor(path, name,
                         absl::StrCat("shape is not an array (got ", Brief(shape), ")"));
  }
  uint64_t numel = 1;
  bool numel_overflow = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    std::optional<uint64_t> dim = AsNonNegativeInteger(shape[i]);
    if (!dim.has_value()) {
      return CorruptTensor(
          path, name,
          absl::StrCat("shape[", i, "] is not a non-negative integer (got ", Brief(shape[i]), ")"));
    }
    if (*dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return CorruptTensor(path, name,
                           absl::StrCat("shape[", i, "] = ", *dim, " does not fit in int64"));
    }
    info.shape.push_back(static_cast<int64_t>(*dim));
    numel_overflow = numel_overflow || __builtin_mul_overflow(numel, *dim, &numel);
  }
  if (numel_overflow) {
    return CorruptTensor(
        path, name,
        absl::StrCat("shape ", ShapeString(info.shape), " has more elements than fit in 64 bits"));
  }
  info.numel = numel;
  std::optional<uint64_t> expected_bytes = DtypeByteSize(info.dtype, numel);
  if (!expected_bytes.has_value()) {
    return CorruptTensor(
        path, name,
        absl::StrCat("shape ", ShapeString(info.shape), " x ", DtypeName(info.dtype),
                     " is not a whole number of bytes or overflows 64 bits"));
  }

  const Json& offsets = entry["data_offsets"];
  std::optional<uint64_t> begin;
  std::optional<uint64_t> end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = AsNonNegativeInteger(offsets[0]);
    end = AsNonNegativeInteger(offsets[1]);
  }
  if (!begin.has_value() || !end.has_value()) {
    return CorruptTensor(path, name,
                         absl::StrCat("data_offsets must be [begin, end] of two non-negative "
                                      "integers (got ",
                                      Brief(offsets), ")"));
  }
  const std::string offsets_text = absl::StrCat("data_offsets [", *begin, ", ", *end, "]");
  if (*begin > *end) {
    return CorruptTensor(path, name, absl::StrCat(offsets_text, " has begin > end"));
  }
  if (*end > data_size) {
    return CorruptTensor(path, name,
                         absl::StrCat(offsets_text, " run past the end of the data section (",
                                      data_size, " bytes)"));
  }
  if (*end - *begin != *expected_bytes) {
    return CorruptTensor(path, name,
                         absl::StrCat(offsets_text, " span ", *end - *begin, " bytes but shape ",
                                      ShapeString(info.shape), " x ", DtypeName(info.dtype),
                                      " needs ", *expected_bytes, " bytes"));
  }
  info.data_begin = *begin;
  info.data_end = *end;
  info.file_offset = data_offset + *begin;
  return info;
}

}  // namespace

SafetensorsFile::SafetensorsFile(std::string path, std::unique_ptr<common::ReadOnlyRegion> region)
    : path_(std::move(path)), region_(std::move(region)) {}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(common::Env* env,
                                                                       const std::string& path) {
  if (env == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": SafetensorsFile::Open: null env"));
  }
  absl::StatusOr<std::unique_ptr<common::ReadOnlyRegion>> region = env->NewReadOnlyRegion(path);
  if (!region.ok()) {
    return region.status();
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(path, *std::move(region)));
  if (absl::Status status = file->Parse(); !status.ok()) {
    return status;
  }
  return file;
}

absl::Status SafetensorsFile::Parse() {
  const uint8_t* bytes = region_->data();
  const uint64_t file_size = region_->size();

  if (file_size < kPrefixBytes) {
    return Corrupt(path_, absl::StrCat("file is ", file_size,
                                       " bytes, shorter than the 8-byte header length prefix"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) {
    header_size = (header_size << 8) | bytes[i];
  }
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return Corrupt(path_, absl::StrCat("header length ", header_size, " exceeds the limit of ",
                                       kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_size > file_size - kPrefixBytes) {
    return Corrupt(path_,
                   absl::StrCat("header length ", header_size, " runs past the end of the file (",
                                file_size - kPrefixBytes, " bytes after the 8-byte prefix)"));
  }
  header_size_ = header_size;
  const uint64_t data_offset = kPrefixBytes + header_size;
  const uint64_t data_size = file_size - data_offset;

  std::string_view text(reinterpret_cast<const char*>(bytes + kPrefixBytes), header_size);
  absl::StatusOr<Json> header = ParseHeaderJson(path_, text);
  if (!header.ok()) {
    return header.status();
  }
  if (!header->is_object()) {
    return Corrupt(path_,
                   absl::StrCat("header is not a JSON object (got ", JsonTypeName(*header), ")"));
  }

  // JSON values are never reached through operator[] on a missing key or get<> on the wrong
  // type below, so nlohmann has nothing to throw; the guard keeps the promise regardless.
  try {
    for (const auto& [name, entry] : header->items()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) {
          return Corrupt(path_, absl::StrCat("\"__metadata__\" is not a JSON object (got ",
                                             JsonTypeName(entry), ")"));
        }
        for (const auto& [key, value] : entry.items()) {
          if (!value.is_string()) {
            return Corrupt(path_, absl::StrCat("\"__metadata__\" value for key \"", key,
                                               "\" is not a string (got ", Brief(value), ")"));
          }
          metadata_.emplace(key, value.get<std::string>());
        }
        continue;
      }
      absl::StatusOr<TensorInfo> info =
          ParseTensorEntry(path_, name, entry, data_size, data_offset);
      if (!info.ok()) {
        return info.status();
      }
      tensors_.push_back(*std::move(info));
    }
  } catch (const Json::exception& e) {
    return Corrupt(path_, absl::StrCat("header could not be read: ", e.what()));
  }

  // Coverage: sorted by offset, each tensor starts where the previous one ended, the first at
  // 0 and the last at the end of the file. This rules out overlaps, gaps and trailing bytes,
  // as the reference implementation does.
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.data_begin, a.data_end, a.name) < std::tie(b.data_begin, b.data_end, b.name);
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& info : tensors_) {
    if (info.data_begin < covered) {
      return CorruptTensor(path_, info.name,
                           absl::StrCat("data_offsets [", info.data_begin, ", ", info.data_end,
                                        "] overlap tensor \"", previous->name, "\" [",
                                        previous->data_begin, ", ", previous->data_end, "]"));
    }
    if (info.data_begin > covered) {
      return CorruptTensor(
          path_, info.name,
          absl::StrCat(
              "data_offsets [", info.data_begin, ", ", info.data_end, "] leave a gap: bytes [",
              covered, ", ", info.data_begin, ") of the data section belong to no tensor",
              previous == nullptr ? std::string()
                                  : absl::StrCat(" (previous tensor \"", previous->name, "\")")));
    }
    covered = info.data_end;
    previous = &info;
  }
  if (covered != data_size) {
    std::string where = previous == nullptr ? std::string("no tensors")
                                            : absl::StrCat("last tensor \"", previous->name,
                                                           "\" ends at ", covered);
    return Corrupt(path_, absl::StrCat("data section is ", data_size, " bytes but tensors cover ",
                                       covered, " (", where, "); ", data_size - covered,
                                       " trailing bytes belong to no tensor"));
  }

  for (size_t i = 0; i < tensors_.size(); ++i) {
    index_.emplace(tensors_[i].name, i);
  }
  return absl::OkStatus();
}

std::vector<std::string> SafetensorsFile::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const TensorInfo& info : tensors_) {
    names.push_back(info.name);
  }
  return names;
}

const TensorInfo* SafetensorsFile::FindTensor(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const TensorInfo*> SafetensorsFile::GetTensorInfo(std::string_view name) const {
  const TensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", Sv(name), "\""));
  }
  return info;
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsFile::GetTensorData(
    std::string_view name) const {
  absl::StatusOr<const TensorInfo*> info = GetTensorInfo(name);
  if (!info.ok()) {
    return info.status();
  }
  return TensorData(**info);
}

}  // namespace quantserve::loader

#pragma once
// Test helpers for the loader tests: build safetensors bytes by hand (valid or deliberately
// broken), check DATA_LOSS errors, and an Env wrapper that injects failures.

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/env.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace quantserve::loader::testing {

// `u64 LE len(header) | header | data`, with `header` verbatim (no padding).
inline std::string MakeSafetensorsBytes(std::string_view header, std::string_view data) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) {
    out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  }
  out.append(header);
  out.append(data);
  return out;
}

// Same, with an explicit (possibly lying) length prefix.
inline std::string MakeSafetensorsBytesWithLength(uint64_t declared_length, std::string_view header,
                                                  std::string_view data) {
  std::string out = MakeSafetensorsBytes(header, data);
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((declared_length >> (8 * i)) & 0xff);
  }
  return out;
}

// Builds a well-formed file the way the reference writer lays it out: tensors back to back in
// insertion order, header padded with spaces to a multiple of 8.
class SafetensorsBuilder {
 public:
  // Adds a tensor whose bytes are `data` (the caller makes the sizes agree).
  SafetensorsBuilder& Add(const std::string& name, const std::string& dtype,
                          std::vector<int64_t> shape, std::string data) {
    uint64_t begin = data_.size();
    data_ += data;
    header_[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, data_.size()}}};
    return *this;
  }
  // Adds an F32 tensor of `values`.
  SafetensorsBuilder& AddF32(const std::string& name, std::vector<int64_t> shape,
                             const std::vector<float>& values) {
    std::string bytes(values.size() * sizeof(float), '\0');
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return Add(name, "F32", std::move(shape), std::move(bytes));
  }
  SafetensorsBuilder& Metadata(const std::string& key, const std::string& value) {
    header_["__metadata__"][key] = value;
    return *this;
  }
  // The header object, for tests that break it before building.
  nlohmann::json& header() { return header_; }
  std::string& data() { return data_; }

  std::string HeaderText() const {
    std::string text = header_.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    return text;
  }
  std::string Build() const { return MakeSafetensorsBytes(HeaderText(), data_); }

 private:
  nlohmann::json header_ = nlohmann::json::object();
  std::string data_;
};

// Little-endian bytes of `values`.
template <typename T>
std::string Bytes(std::initializer_list<T> values) {
  std::string out;
  for (T v : values) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));
    out.append(buf, sizeof(T));
  }
  return out;
}

// Asserts `status` has `code` and its message contains every one of `parts`.
inline void ExpectError(const absl::Status& status, absl::StatusCode code,
                        std::initializer_list<std::string_view> parts) {
  EXPECT_EQ(status.code(), code) << status;
  for (std::string_view part : parts) {
    EXPECT_NE(std::string(status.message()).find(part), std::string::npos)
        << "message lacks \"" << part << "\": " << status;
  }
}

// An Env that forwards to `base` but fails chosen operations on chosen paths.
class FaultInjectingEnv : public common::Env {
 public:
  enum class Op { kRegion, kRead, kSize, kList };

  explicit FaultInjectingEnv(common::Env* base) : base_(base) {}

  // Makes `op` on `path` return `status` from now on.
  void Fail(Op op, const std::string& path, absl::Status status) {
    faults_[{op, path}] = std::move(status);
  }

  absl::StatusOr<std::unique_ptr<common::ReadOnlyRegion>> NewReadOnlyRegion(
      const std::string& path) override {
    if (auto it = faults_.find({Op::kRegion, path}); it != faults_.end()) {
      return it->second;
    }
    return base_->NewReadOnlyRegion(path);
  }
  absl::StatusOr<std::string> ReadFileToString(const std::string& path) override {
    if (auto it = faults_.find({Op::kRead, path}); it != faults_.end()) {
      return it->second;
    }
    return base_->ReadFileToString(path);
  }
  bool FileExists(const std::string& path) override { return base_->FileExists(path); }
  bool IsDirectory(const std::string& path) override { return base_->IsDirectory(path); }
  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    if (auto it = faults_.find({Op::kSize, path}); it != faults_.end()) {
      return it->second;
    }
    return base_->GetFileSize(path);
  }
  absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path) override {
    if (auto it = faults_.find({Op::kList, path}); it != faults_.end()) {
      return it->second;
    }
    return base_->ListDirectory(path);
  }

 private:
  common::Env* base_;
  std::map<std::pair<Op, std::string>, absl::Status> faults_;
};

}  // namespace quantserve::loader::testing

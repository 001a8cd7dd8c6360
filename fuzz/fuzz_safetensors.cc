// A safetensors file of arbitrary bytes: Open either refuses it with a status or hands out
// spans that lie inside the file (read here, so ASan sees any that do not).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/env.h"
#include "loader/safetensors_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = "/m/model.safetensors";
  auto env = quantserve::common::NewMemEnv(
      {{path, std::string(reinterpret_cast<const char*>(data), size)}});
  auto file = quantserve::loader::SafetensorsFile::Open(env.get(), path);
  if (!file.ok()) return 0;
  uint64_t sum = 0;
  for (const quantserve::loader::TensorInfo& info : (*file)->tensors()) {
    absl::Span<const uint8_t> bytes = (*file)->TensorData(info);
    if (!bytes.empty()) sum += bytes.front() + bytes.back();
    sum += info.name.size() + info.numel;
  }
  for (const auto& [key, value] : (*file)->metadata()) sum += key.size() + value.size();
  return sum == 0xFFFFFFFFFFFFFFFFull ? 1 : 0;  // keeps the reads
}

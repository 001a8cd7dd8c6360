// A sharded checkpoint whose index (model.safetensors.index.json) is arbitrary bytes, next to
// two small valid shards: Open refuses it with a status or cross-checks it against them.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/env.h"
#include "loader/checkpoint.h"

namespace {

// A one-tensor safetensors file: `name`, U8 [2].
std::string Shard(const std::string& name) {
  const std::string header =
      "{\"" + name + "\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + "ab";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto env = quantserve::common::NewMemEnv({
      {"/m/model.safetensors.index.json", std::string(reinterpret_cast<const char*>(data), size)},
      {"/m/model-00001-of-00002.safetensors", Shard("a.weight")},
      {"/m/model-00002-of-00002.safetensors", Shard("b.weight")},
  });
  auto checkpoint = quantserve::loader::Checkpoint::Open(env.get(), "/m");
  if (!checkpoint.ok()) return 0;
  uint64_t sum = 0;
  for (const auto& tensor : (*checkpoint)->tensors()) sum += tensor.data().size();
  return sum == 0xFFFFFFFFFFFFFFFFull ? 1 : 0;
}

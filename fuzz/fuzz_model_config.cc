// config.json (and generation_config.json) of arbitrary bytes: ParseModelConfig refuses it
// with a status or returns a config whose sizes passed the range checks.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "models/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first half is config.json, the rest generation_config.json.
  const std::string all(reinterpret_cast<const char*>(data), size);
  const size_t split = size / 2;
  for (const auto& [config, generation] :
       {std::pair{all, std::string()}, std::pair{all.substr(0, split), all.substr(split)}}) {
    auto parsed = quantserve::models::ParseModelConfig(config, generation);
    if (!parsed.ok()) continue;
    if (parsed->num_hidden_layers <= 0 || parsed->num_hidden_layers > 1024 ||
        parsed->hidden_size <= 0 || parsed->vocab_size <= 0 || parsed->head_dim <= 0 ||
        parsed->num_attention_heads % parsed->num_key_value_heads != 0) {
      std::abort();  // a config the range checks should have refused
    }
  }
  return 0;
}

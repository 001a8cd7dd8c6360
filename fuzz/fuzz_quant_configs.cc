// Every method's quantization_config parser on arbitrary bytes: a status or a config, never a
// crash. The first byte picks the parser; the rest is the JSON text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "quant/methods/aqlm/aqlm_config.h"
#include "quant/methods/awq/awq_config.h"
#include "quant/methods/bitsandbytes/bitsandbytes_config.h"
#include "quant/methods/compressed_tensors/compressed_tensors_config.h"
#include "quant/methods/eetq/eetq_config.h"
#include "quant/methods/fbgemm_fp8/fbgemm_fp8_config.h"
#include "quant/methods/gptq/gptq_config.h"
#include "quant/methods/hqq/hqq_config.h"
#include "quant/methods/quanto/quanto_config.h"
#include "quant/methods/torchao/torchao_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  namespace q = quantserve::quant;
  const std::string json(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 10) {
    case 0: (void)q::AqlmConfig::Parse(json); break;
    case 1: (void)q::AwqConfig::Parse(json); break;
    case 2: (void)q::BitsAndBytesConfig::Parse(json); break;
    case 3: (void)q::CompressedTensorsConfig::Parse(json); break;
    case 4: (void)q::EetqConfig::Parse(json); break;
    case 5: (void)q::FbgemmFp8Config::Parse(json); break;
    case 6: (void)q::GptqConfig::Parse(json); break;
    case 7: (void)q::HqqConfig::Parse(json); break;
    case 8: (void)q::QuantoConfig::Parse(json); break;
    default: (void)q::TorchAoConfig::Parse(json); break;
  }
  return 0;
}

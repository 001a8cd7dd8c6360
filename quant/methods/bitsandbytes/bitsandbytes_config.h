#pragma once
// BitsAndBytesConfig: transformers 5.23's `BitsAndBytesConfig` (quant_method "bitsandbytes"),
// one struct for both LLM.int8 (load_in_8bit) and QLoRA 4-bit (load_in_4bit).
//
// Parse() applies transformers' __init__ + post_init checks, one INVALID_ARGUMENT per rule,
// plus the two that fire later in transformers/bnb and that we move up front:
//   * neither load_in_8bit nor load_in_4bit true: AutoQuantizationConfig cannot pick a
//     quantizer ("Unknown quantization type, got bitsandbytes");
//   * bnb_4bit_quant_type other than "fp4"/"nf4": bnb's quantize_4bit raises at load.
// ToJson() is transformers' to_dict() (the private `_load_in_*` keys included, in its key order).

#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

struct BitsAndBytesConfig {
  bool load_in_8bit = false;  // LLM.int8: Linear8bitLt
  bool load_in_4bit = false;  // QLoRA: Linear4bit (FP4/NF4)
  // 8-bit: activation columns with any |x| >= threshold run in float (0 disables outliers).
  double llm_int8_threshold = 6.0;
  // Modules kept in float (both 8 and 4 bit). Given, it REPLACES transformers' default skips.
  std::optional<std::vector<std::string>> llm_int8_skip_modules;
  // With a device_map sending modules to cpu/disk: keep those modules unquantized.
  bool llm_int8_enable_fp32_cpu_offload = false;
  // 8-bit: keep the float weight and quantize it at every forward.
  bool llm_int8_has_fp16_weight = false;
  c10::ScalarType bnb_4bit_compute_dtype = c10::ScalarType::Float;  // null -> float32
  std::string bnb_4bit_quant_type = "fp4";                          // "fp4" | "nf4"
  bool bnb_4bit_use_double_quant = false;  // quantize the absmax again (256-blocks, 8-bit)
  // dtype the packed 4-bit bytes are viewed as (same bytes).
  c10::ScalarType bnb_4bit_quant_storage = c10::ScalarType::Byte;

  // INVALID_ARGUMENT naming the field for every config transformers (or bnb at load) rejects.
  static absl::StatusOr<BitsAndBytesConfig> Parse(const std::string& json);
  // transformers' to_dict() as JSON.
  std::string ToJson() const;
};

// transformers' dtype names for the 4-bit dtype fields: "float32", "bfloat16", ... (what
// str(torch.dtype).split(".")[1] gives).
std::string BnbDtypeName(c10::ScalarType dtype);

}  // namespace quantserve::quant

#pragma once
// QuantoConfig: transformers 5.23's QuantoConfig (quant_method "quanto", optimum-quanto).
//
//   weights                 "int8" (default) | "float8" | "int4" | "int2"
//   activations             null (default) | "int8" | "float8"
//   modules_to_not_convert  null (default: transformers' default skips) | list of patterns;
//                           a list REPLACES the default skips (lm_head, tied, last parameter)
//
// Parse applies QuantoConfig.post_init's checks; a null or non-string `weights` is refused
// like a wrong name (transformers' `weights not in accepted_weights`). Unknown keys are
// ignored, as transformers does. transformers refuses `activations` when quantizing at load;
// we accept it and calibrate the activation scales on LoadModelRequest.calibration_texts
// (see QuantoQuantizer).
//
// optimum-quanto's own serialization (QuantizedModelForCausalLM.save_pretrained) has no
// quantization_config but a quanto_qmap.json beside the weights; the loader turns it into
//
//   {"quant_method": "quanto", "quantization_map": {"<module>": {"weights": "qint8",
//                                                                "activations": "none"}, ...}}
//
// with optimum-quanto's qtype names (qint8, qint4, qint2, qfloat8_e4m3fn; "none"). With a
// map, exactly the modules it names are quantized, each with its own qtypes; the other
// fields are ignored. A map naming another qtype (qfloat8_e5m2, ...) or a module without
// weights is INVALID_ARGUMENT naming the module.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

struct QuantoConfig {
  // One quanto_qmap.json entry in QuantoConfig names ("int8", ...; activations unset = none).
  struct ModuleQTypes {
    std::string weights;
    std::optional<std::string> activations;
  };

  std::string weights = "int8";
  std::optional<std::string> activations;  // unset = weight-only
  std::optional<std::vector<std::string>> modules_to_not_convert;
  // Set for optimum-quanto's own serialization: module name -> its qtypes.
  std::optional<std::map<std::string, ModuleQTypes>> quantization_map;

  // INVALID_ARGUMENT naming the field and its allowed values.
  static absl::StatusOr<QuantoConfig> Parse(const std::string& json);

  // transformers' to_dict() as JSON, in its key order:
  // {"quant_method":"quanto","weights":"int8","activations":null,"modules_to_not_convert":null}
  // and, with a map, {"quant_method":"quanto","quantization_map":{...}} in qmap names.
  std::string ToJson() const;

  // quanto_qmap.json as optimum-quanto writes it: module -> {"weights", "activations"} in
  // qmap names.
  static std::string QuantizationMapJson(const std::map<std::string, ModuleQTypes>& map);
};

}  // namespace quantserve::quant

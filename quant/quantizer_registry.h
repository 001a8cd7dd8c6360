#pragma once
// QuantizerRegistry: HF `quant_method` string -> (config parser + quantizer factory).
//
// One row per method; a row parses the HF quantization_config JSON (filling transformers'
// defaults, rejecting what transformers rejects with INVALID_ARGUMENT naming the field) and
// builds the Quantizer for one load. Registration is explicit (RegisterBuiltinQuantizers) and
// duplicate keys are errors. Thread-safe for lookups once populated; populate before sharing.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/quantizer.h"

namespace quantserve::quant {

class QuantizerRegistry {
 public:
  // Parses `config_json` (the object whose "quant_method" selected this row) and returns a
  // quantizer for one load.
  using Factory =
      std::function<absl::StatusOr<std::unique_ptr<Quantizer>>(const std::string& config_json)>;

  // ALREADY_EXISTS when `quant_method` is registered. `loading_attributes` are the config
  // fields a request may override on a pre-quantized checkpoint (transformers'
  // get_loading_attributes: GPTQ/AWQ `backend`, `max_input_length`; FBGEMM
  // `activation_scale_ub`; ...).
  absl::Status Register(const std::string& quant_method, Factory factory,
                        std::vector<std::string> loading_attributes = {});

  // Resolves the config for a load. `request_json` (from LoadModel) and `checkpoint_json`
  // (config.json's quantization_config) may each be empty. Empty both -> the "none" quantizer.
  // A method missing from the registry is INVALID_ARGUMENT listing the supported ones; a
  // request naming a different method than the checkpoint is INVALID_ARGUMENT. With both, as
  // transformers' merge_quantization_configs: the request is validated, then the checkpoint's
  // config is used with the request's loading attributes (normalized values) written over it;
  // the request's other fields are ignored.
  absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& request_json,
                                                    const std::string& checkpoint_json) const;

  std::vector<std::string> methods() const;

 private:
  struct Row {
    Factory factory;
    std::vector<std::string> loading_attributes;
  };
  std::map<std::string, Row> factories_;
};

// Registers every method this build implements (explicitly, no static initializers).
absl::Status RegisterBuiltinQuantizers(QuantizerRegistry& registry);

// The process's registry with the builtins, built on first use.
const QuantizerRegistry& BuiltinQuantizerRegistry();

}  // namespace quantserve::quant

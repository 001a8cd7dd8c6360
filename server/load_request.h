#pragma once
// What to load: a LoadModel request or a startup-config entry, before it reaches the engine,
// and the checks every such request passes first.
//
// Where it sits: the model service and the startup config build a LoadRequest; the registry
// validates it (ValidateLoadRequest), resolves its path inside --model_root
// (ResolveModelPath) and turns it into engine::LoadOptions. Errors name the offending field
// ("path: ...") so clients can point at it.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantserve::server {

struct LoadRequest {
  std::string name{};                      // unique model name (see ValidateModelName)
  std::string path{};                      // model directory relative to --model_root
  std::string quantization_config_json{};  // HF quantization_config JSON object; "" = checkpoint's
  std::string dtype{};                     // auto|float32|bfloat16|float16; "" = auto
  std::string device_map{};                // auto|cpu|cuda|cuda:N or a JSON object; "" = cpu
  std::string max_memory_json{};           // JSON object of per-device limits; "" = none
  int num_threads = 0;                     // intra-op threads; 0 = the server default
  // Texts to calibrate static activation scales on (quanto activations); see the proto.
  std::vector<std::string> calibration_texts{};
  std::string kernel_activations{};  // int16|int8; "" = int16 (see the proto)
};

// Longest model name accepted.
inline constexpr size_t kMaxModelNameLength = 128;

// Names are 1-128 characters from [A-Za-z0-9._-]: they become health-service names, metric
// labels and log fields. Errors: INVALID_ARGUMENT naming `field`.
absl::Status ValidateModelName(absl::string_view name, absl::string_view field = "name");

// Checks every field's syntax (the engine checks their meaning): name, path present,
// quantization_config / max_memory JSON objects, dtype, device_map, num_threads >= 0,
// kernel_activations.
// Errors: INVALID_ARGUMENT naming the field.
absl::Status ValidateLoadRequest(const LoadRequest& request);

// The quant_method a request's quantization_config names, "" when it names none (or is not
// valid JSON). Used to label a model's metrics while it loads.
std::string RequestedQuantMethod(absl::string_view quantization_config_json);

// The lexical rules every client path obeys before it touches the file system: not empty, no
// NUL or control characters (the OS would cut the path at a NUL), relative (to --model_root),
// no ".." component. Errors: INVALID_ARGUMENT ("path: ...").
absl::Status CheckRequestPath(absl::string_view path);

// Resolves `path` (CheckRequestPath) inside `model_root` (an absolute, canonical directory) and
// returns the canonical absolute directory, symlinks resolved. Symlinks inside the root (HF
// cache layouts) are followed; one leading outside is refused unless
// allow_symlinks_outside_root (operators keeping a model store elsewhere).
// Errors: INVALID_ARGUMENT ("path: ...") for escapes and non-directories, NOT_FOUND when
// nothing exists there.
absl::StatusOr<std::string> ResolveModelPath(absl::string_view model_root, absl::string_view path,
                                             bool allow_symlinks_outside_root = false);

// Resolves a directory SaveModel will create: like ResolveModelPath, except that nothing
// may exist at `path` yet (an empty directory is accepted); the nearest existing ancestor
// must lie inside --model_root after symlinks (always: writes never leave the root). Errors: INVALID_ARGUMENT ("path: ...") for
// escapes, ALREADY_EXISTS when something is already there.
absl::StatusOr<std::string> ResolveNewModelPath(absl::string_view model_root,
                                                absl::string_view path);

// Parses a startup config:
//   {"models": [{"name": "tiny", "path": "tiny-llama",
//                "quantization_config": {...} or "<json text>",
//                "dtype": "bfloat16", "device_map": "cpu" or {...},
//                "max_memory": {...}, "num_threads": 4, "kernel_activations": "int8",
//                "calibration_texts": ["...", ...]}]}
// Only name and path are required. Errors: INVALID_ARGUMENT naming the entry and field, or
// ALREADY_EXISTS for a duplicate name.
absl::StatusOr<std::vector<LoadRequest>> ParseStartupConfig(absl::string_view json_text);

}  // namespace quantserve::server

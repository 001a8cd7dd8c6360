#pragma once
// CommandLine: quantserve-cli's argument parser.
//
// The CLI is verb-based (`quantserve-cli --server=H:P generate MODEL PROMPT --max_new_tokens=8`)
// with flags that belong to verbs, some of them repeatable (--stop), and exit code 2 on any
// usage error, so it parses its own arguments from a table of FlagSpecs rather than through
// process-wide flag registration. Flags may appear anywhere; `--` ends them.
//
//   --name=value | --name value     flags that take a value
//   --name | --name=true|false      boolean flags
//   -h | --help                     help (for the verb, when one is given)

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantserve::cli {

struct FlagSpec {
  std::string name;            // without the dashes
  std::string value_name;      // "N", "JSON|@FILE"; empty for boolean flags
  std::string help;            // one line
  bool repeatable = false;     // may be given more than once (values accumulate)
  std::string default_text{};  // shown in help; empty = no default
};

class CommandLine {
 public:
  // Parses `args` (without the program name) against `specs`. Errors (INVALID_ARGUMENT, a
  // usage error): unknown flag, missing value, repeated non-repeatable flag, bad boolean.
  static absl::StatusOr<CommandLine> Parse(const std::vector<std::string>& args,
                                           const std::vector<FlagSpec>& specs);

  const std::vector<std::string>& positional() const { return positional_; }
  bool help() const { return help_; }
  bool Has(absl::string_view name) const;

  // The flag's last value, or `fallback` when absent.
  std::string GetString(absl::string_view name, const std::string& fallback = "") const;
  std::vector<std::string> GetAll(absl::string_view name) const;
  // Typed values; INVALID_ARGUMENT naming the flag when the text does not parse.
  absl::StatusOr<std::optional<int64_t>> GetInt(absl::string_view name) const;
  absl::StatusOr<std::optional<double>> GetDouble(absl::string_view name) const;
  bool GetBool(absl::string_view name) const;

 private:
  std::vector<std::string> positional_;
  std::map<std::string, std::vector<std::string>, std::less<>> values_;
  bool help_ = false;
};

// "  --name=VALUE   help (default: x)" lines for `specs`, aligned.
std::string FlagsHelp(const std::vector<FlagSpec>& specs);

}  // namespace quantserve::cli

#include "cli/command_line.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace quantserve::cli {
namespace {

const FlagSpec* FindSpec(const std::vector<FlagSpec>& specs, absl::string_view name) {
  for (const FlagSpec& spec : specs) {
    if (spec.name == name) {
      return &spec;
    }
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<CommandLine> CommandLine::Parse(const std::vector<std::string>& args,
                                               const std::vector<FlagSpec>& specs) {
  CommandLine parsed;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (flags_done || !absl::StartsWith(arg, "-") || arg == "-") {
      parsed.positional_.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      parsed.help_ = true;
      continue;
    }
    absl::string_view body = arg.substr(absl::StartsWith(arg, "--") ? 2 : 1);
    std::optional<std::string> value;
    if (size_t eq = body.find('='); eq != absl::string_view::npos) {
      value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    const FlagSpec* spec = FindSpec(specs, body);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", body));
    }
    if (spec->value_name.empty()) {
      if (value.has_value() && *value != "true" && *value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat("--", body, " is a switch; use --", body, " or --", body, "=false"));
      }
      value = value.value_or("true");
    } else if (!value.has_value()) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", body, " needs a value (", spec->value_name, ")"));
      }
      value = args[++i];
    }
    std::vector<std::string>& values = parsed.values_[spec->name];
    if (!values.empty() && !spec->repeatable) {
      return absl::InvalidArgumentError(absl::StrCat("--", body, " given more than once"));
    }
    values.push_back(*std::move(value));
  }
  return parsed;
}

bool CommandLine::Has(absl::string_view name) const { return values_.contains(name); }

std::string CommandLine::GetString(absl::string_view name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> CommandLine::GetAll(absl::string_view name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>() : it->second;
}

absl::StatusOr<std::optional<int64_t>> CommandLine::GetInt(absl::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    return std::optional<int64_t>();
  }
  int64_t value = 0;
  if (!absl::SimpleAtoi(it->second.back(), &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be an integer, got '", it->second.back(), "'"));
  }
  return std::optional<int64_t>(value);
}

absl::StatusOr<std::optional<double>> CommandLine::GetDouble(absl::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    return std::optional<double>();
  }
  double value = 0;
  if (!absl::SimpleAtod(it->second.back(), &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number, got '", it->second.back(), "'"));
  }
  return std::optional<double>(value);
}

bool CommandLine::GetBool(absl::string_view name) const { return GetString(name) == "true"; }

std::string FlagsHelp(const std::vector<FlagSpec>& specs) {
  std::vector<std::string> left;
  size_t width = 0;
  for (const FlagSpec& spec : specs) {
    std::string l = absl::StrCat("  --", spec.name);
    if (!spec.value_name.empty()) {
      absl::StrAppend(&l, "=", spec.value_name);
    }
    width = std::max(width, l.size());
    left.push_back(std::move(l));
  }
  std::string out;
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::StrAppend(&out, left[i], std::string(width - left[i].size() + 3, ' '), specs[i].help);
    if (specs[i].repeatable) {
      absl::StrAppend(&out, " (repeatable)");
    }
    if (!specs[i].default_text.empty()) {
      absl::StrAppend(&out, " (default: ", specs[i].default_text, ")");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace quantserve::cli

#include "quant/module_match.h"

#include <algorithm>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace quantserve::quant {

bool MatchesSkipPattern(const std::string& name, const std::string& pattern) {
  if (absl::EndsWith(name, pattern)) return true;  // "" matches everything, as in Python
  std::regex re;
  try {
    re = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error&) {
    return name == pattern || absl::StartsWith(name, pattern + ".");
  }
  // Every prefix that ends at a module boundary, tried as a full match: the same set of
  // matches Python's backtracking re.match(rf"(?:{key})(?:(?<=\.)|(?=\.|$))") accepts.
  for (size_t end = 1; end <= name.size(); ++end) {
    const bool boundary = end == name.size() || name[end] == '.' || name[end - 1] == '.';
    if (boundary && std::regex_match(name.substr(0, end), re)) return true;
  }
  return false;
}

bool MatchesAnySkipPattern(const std::string& name, const std::vector<std::string>& patterns) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& p) { return MatchesSkipPattern(name, p); });
}

std::vector<std::string> DefaultModulesToNotConvert(const models::Module& root) {
  std::vector<std::string> out = {"lm_head"};
  auto add = [&](std::string key) {
    if (absl::EndsWith(key, ".weight")) key.resize(key.size() - 7);
    if (!key.empty() && std::find(out.begin(), out.end(), key) == out.end()) out.push_back(key);
  };
  std::string last;
  for (const auto& p : root.NamedParameters()) {
    if (!p.slot.tied_to.empty()) {
      add(p.name);
      add(p.slot.tied_to);
    } else {
      last = p.name;  // torch's named_parameters() drops tied duplicates
    }
  }
  add(last);
  return out;
}

std::string HqqLinearTag(const std::string& name) {
  std::vector<std::string> kept;
  for (absl::string_view part : absl::StrSplit(name, '.')) {
    if (part == "model" || part == "layers" || part.empty()) continue;
    if (std::all_of(part.begin(), part.end(), [](char c) { return absl::ascii_isdigit(c); })) {
      continue;
    }
    kept.emplace_back(part);
  }
  return absl::StrJoin(kept, ".");
}

}  // namespace quantserve::quant

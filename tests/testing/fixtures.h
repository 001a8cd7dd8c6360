#pragma once
// Where the generated test fixtures live, for tests that need models and reference outputs.
// scripts/make_fixtures.sh makes them (cached by each script's hash); a missing fixture is a
// test FAILURE naming the script, never a silent skip.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace quantserve::testing {

inline std::string FixturesDir() {
  const char* env = std::getenv("QS_FIXTURES_DIR");
  if (env != nullptr && *env != '\0') return env;
#ifdef QS_FIXTURES_DIR_DEFAULT
  return QS_FIXTURES_DIR_DEFAULT;
#else
  return "tests/fixtures/out";
#endif
}

inline std::string SourceDir() {
#ifdef QS_SOURCE_DIR
  return QS_SOURCE_DIR;
#else
  return ".";
#endif
}

// The fixture directory `name` (e.g. "tiny-llama"); fails the test when it is missing.
inline std::string FixturePath(const std::string& name) {
  std::string path = FixturesDir() + "/" + name;
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << "fixture " << path
                  << " is missing: run scripts/make_fixtures.sh (or set QS_FIXTURES_DIR)";
  }
  return path;
}

inline nlohmann::json ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return nlohmann::json();
  }
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) ADD_FAILURE() << path << " is not JSON";
  return j;
}

}  // namespace quantserve::testing

#pragma once
// Structured, levelled logging to stderr in logfmt ("ts=... level=info msg=... key=value").
//
//   QS_LOG(INFO) << "model ready" << common::Kv("model", name) << common::Kv("seconds", 1.2);
//
// Thread-safe: each statement formats into its own buffer and writes one line atomically.
// The threshold is process-wide (set once at startup from --log_level).

#include <sstream>
#include <string>
#include <string_view>

namespace quantserve::common {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug|info|warning|error"; returns false on anything else.
bool ParseLogLevel(std::string_view text, LogLevel* level);

// A key=value field; strings are quoted when they contain spaces, quotes or '='.
struct Kv {
  template <typename T>
  Kv(std::string_view key, const T& value) : key(key) {
    std::ostringstream os;
    os << value;
    this->value = os.str();
  }
  Kv(std::string_view key, std::string_view value) : key(key), value(value) {}
  Kv(std::string_view key, const char* value) : key(key), value(value) {}
  Kv(std::string_view key, const std::string& value) : key(key), value(value) {}
  std::string key;
  std::string value;
};

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage& operator<<(const Kv& kv);
  template <typename T>
  LogMessage& operator<<(const T& text) {
    msg_ << text;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream msg_;
  std::string fields_;
};

}  // namespace quantserve::common

#define QS_LOG_LEVEL_DEBUG ::quantserve::common::LogLevel::kDebug
#define QS_LOG_LEVEL_INFO ::quantserve::common::LogLevel::kInfo
#define QS_LOG_LEVEL_WARNING ::quantserve::common::LogLevel::kWarning
#define QS_LOG_LEVEL_ERROR ::quantserve::common::LogLevel::kError
#define QS_LOG(severity)                                                      \
  if (QS_LOG_LEVEL_##severity < ::quantserve::common::GetLogLevel()) {       \
  } else                                                                      \
    ::quantserve::common::LogMessage(QS_LOG_LEVEL_##severity, __FILE__, __LINE__)

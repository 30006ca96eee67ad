// Logger: the program's event log, one line per event, text or JSON.
//
// Shared by every I/O thread of a command; each line is written and flushed
// whole under a mutex, so lines never interleave. Text lines read
// "2026-11-26T01:02:03.456 connect 127.0.0.1:50312 (clients: 1)"; JSON lines
// carry the same facts as fields: {"time":...,"event":"connect",...}.
//
// Callers pass outside text through printable() (text_escape.h); as a safety
// net the text line is still escaped whole (one_line()), so no caller can
// forge a line or reach the terminal by forgetting to. JSON lines are written
// by json_text(), always valid UTF-8 JSON.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tcpkit::cli {

enum class LogFormat { text, json };

// One field of a JSON line; numbers are written unquoted.
struct LogField {
  std::string key;
  std::string value;
  bool number = false;
};

class Logger {
 public:
  explicit Logger(LogFormat format, std::FILE* out = stdout) : format_(format), out_(out) {}

  // `text` is the human line; `fields` the same facts for JSON.
  void log(std::string_view event, std::string_view text, const std::vector<LogField>& fields = {});

  static LogField str(std::string key, std::string value) {
    return {std::move(key), std::move(value), false};
  }
  static LogField num(std::string key, unsigned long long value) {
    return {std::move(key), std::to_string(value), true};
  }

 private:
  LogFormat format_;
  std::FILE* out_;
  std::mutex mutex_;
};

// "2026-11-26T01:02:03.456" in local time.
std::string timestamp_now();

}  // namespace tcpkit::cli

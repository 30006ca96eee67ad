#include "logger.h"

#include <chrono>
#include <ctime>

#include <fmt/core.h>

namespace tcpkit::cli {

std::string timestamp_now() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}", buf, ms);
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void Logger::log(std::string_view event, std::string_view text, const std::vector<LogField>& fields) {
  std::string line;
  if (format_ == LogFormat::text) {
    line = fmt::format("{} {}\n", timestamp_now(), text);
  } else {
    line = fmt::format("{{\"time\": \"{}\", \"event\": \"{}\"", timestamp_now(), json_escape(event));
    for (const auto& f : fields) {
      if (f.number) {
        line += fmt::format(", \"{}\": {}", f.key, f.value);
      } else {
        line += fmt::format(", \"{}\": \"{}\"", f.key, json_escape(f.value));
      }
    }
    line += "}\n";
  }
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace tcpkit::cli

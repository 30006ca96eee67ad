#include "common/logger.h"

#include <chrono>
#include <ctime>

#include <fmt/core.h>

#include "common/json_writer.h"
#include "common/text_escape.h"

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

void Logger::log(std::string_view event, std::string_view text,
                 const std::vector<LogField>& fields) {
  std::string line;
  if (format_ == LogFormat::text) {
    line = fmt::format("{} {}\n", timestamp_now(), one_line(text));
  } else {
    Json object;
    object["time"] = timestamp_now();
    object["event"] = event;
    for (const auto& f : fields) {
      if (f.number) {
        object[f.key] = std::stoull(f.value);
      } else {
        object[f.key] = f.value;
      }
    }
    line = json_text(object) + "\n";
  }
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace tcpkit::cli

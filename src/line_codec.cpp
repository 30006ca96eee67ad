#include "tcpkit/line_codec.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>

namespace tcpkit {

DecodeResult LineCodec::decode(Buffer& in, std::string* line) const {
  const char* start = in.peek();
  const size_t readable = in.readable_bytes();
  // A line within the limit has its '\n' at index max_line + 1 at the latest
  // (max_line bytes, then "\r\n"), so there is no need to look further.
  const size_t window = max_line_ > SIZE_MAX - 2 ? SIZE_MAX : max_line_ + 2;
  const size_t scan = std::min(readable, window);
  const auto* eol = static_cast<const char*>(std::memchr(start, '\n', scan));
  if (eol == nullptr) {
    // A trailing '\r' may be the first half of "\r\n"; it is not content yet.
    size_t partial = readable;
    if (partial > 0 && start[partial - 1] == '\r') --partial;
    return partial > max_line_ ? DecodeResult::too_large : DecodeResult::need_more;
  }
  const auto terminator_at = static_cast<size_t>(eol - start);
  size_t length = terminator_at;
  if (length > 0 && start[length - 1] == '\r') --length;
  if (length > max_line_) return DecodeResult::too_large;
  line->assign(start, length);
  in.retrieve(terminator_at + 1);
  return DecodeResult::frame;
}

Result<void> LineCodec::encode(std::string_view line, Buffer& out) {
  // Lines are often text from outside: a '\n' in one would put a second
  // line, of the sender's choosing, on the wire.
  if (const size_t at = line.find('\n'); at != std::string_view::npos) {
    return Error(std::make_error_code(std::errc::invalid_argument),
                 "line to encode (" + std::to_string(line.size()) +
                     " bytes) holds a '\\n' at byte " + std::to_string(at));
  }
  out.ensure_writable(line.size() + 1);
  out.append(line);
  out.append("\n", 1);
  return {};
}

Error LineCodec::too_large_error() const {
  return Error(Errc::line_too_long, "line over " + std::to_string(max_line_) + " bytes");
}

}  // namespace tcpkit

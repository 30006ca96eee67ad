/// \file
/// LineCodec: text lines ended by "\n" or "\r\n" (telnet, nc, most chat
/// protocols), with a maximum length so a peer that never sends a newline
/// cannot make the input buffer grow without bound.
///
/// Stateless after construction: decode() is const and encode() static, so
/// one codec may be shared by all connections and threads.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "tcpkit/buffer.h"
#include "tcpkit/codec.h"
#include "tcpkit/result.h"

namespace tcpkit {

class LineCodec {
 public:
  static constexpr size_t kDefaultMaxLine = size_t{64} * 1024;

  /// max_line: the longest line accepted, in bytes, not counting "\n"/"\r\n".
  explicit LineCodec(size_t max_line = kDefaultMaxLine) : max_line_(max_line) {}

  /// frame: the first line, without its terminator, is assigned to *line and
  /// consumed from `in` together with the terminator (an empty line is a valid,
  /// empty message). need_more: no terminator yet and the partial line is within
  /// the limit. too_large: the line, or the partial line so far, is longer than
  /// max_line; nothing is consumed and the caller should close the connection
  /// with too_large_error(). Only "\\r\\n" is stripped: a lone '\\r' is content.
  ///
  /// Each call scans at most max_line + 2 bytes, so a peer that trickles a long
  /// line costs O(max_line) per read, bounded by the limit.
  DecodeResult decode(Buffer& in, std::string* line) const;

  /// Appends line + "\n". A line holding '\n' would be two lines on the
  /// wire (one of them chosen by whoever wrote the text), so it is refused:
  /// std::errc::invalid_argument, naming where the '\n' is, and nothing is
  /// written. A '\\r' is content, but one at the end of `line` reads back as
  /// part of the "\\r\\n" terminator, so decode() drops it.
  [[nodiscard]] static Result<void> encode(std::string_view line, Buffer& out);

  size_t max_line() const { return max_line_; }
  /// Errc::line_too_long, naming the limit, for the close callback.
  Error too_large_error() const;

 private:
  size_t max_line_;
};

}  // namespace tcpkit

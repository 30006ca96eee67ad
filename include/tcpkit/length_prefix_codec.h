/// \file
/// LengthPrefixCodec: binary messages framed by a 4-byte big-endian length
/// (the payload's length, not counting the 4 header bytes), with a maximum
/// frame size so a bogus or hostile header cannot make the buffer grow to 4 GiB.
///
/// ```
///   +--------------------+---------------------------+
///   | u32 length (BE)    | payload (length bytes)    |
///   +--------------------+---------------------------+
/// ```
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

class LengthPrefixCodec {
 public:
  static constexpr size_t kHeaderBytes = 4;
  static constexpr size_t kDefaultMaxFrame = size_t{1024} * 1024;

  /// max_frame: the largest payload accepted, in bytes.
  explicit LengthPrefixCodec(size_t max_frame = kDefaultMaxFrame) : max_frame_(max_frame) {}

  /// frame: the first payload is assigned to *frame and consumed from `in`
  /// with its header (a zero-length frame is a valid, empty message).
  /// need_more: the header or the payload is incomplete. too_large: the header
  /// announces more than max_frame bytes; this is reported as soon as the header
  /// has arrived, without waiting for the payload. Nothing is consumed then, and
  /// the caller should close the connection with too_large_error().
  DecodeResult decode(Buffer& in, std::string* frame) const;

  /// Appends the header and the payload. A payload of 4 GiB or more does
  /// not fit the 32-bit header, and a truncated header would let its tail
  /// be read as frames of the sender's choosing: it is refused
  /// (Errc::frame_too_large), and nothing is written.
  [[nodiscard]] static Result<void> encode(std::string_view payload, Buffer& out);

  size_t max_frame() const { return max_frame_; }
  /// Errc::frame_too_large, naming the limit, for the close callback.
  Error too_large_error() const;

 private:
  size_t max_frame_;
};

}  // namespace tcpkit

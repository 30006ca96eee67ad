#include "tcpkit/length_prefix_codec.h"

#include <cassert>
#include <cstdint>
#include <limits>

namespace tcpkit {

DecodeResult LengthPrefixCodec::decode(Buffer& in, std::string* frame) const {
  if (in.readable_bytes() < kHeaderBytes) return DecodeResult::need_more;
  const size_t length = in.peek_u32_be();
  if (length > max_frame_) return DecodeResult::too_large;
  if (in.readable_bytes() < kHeaderBytes + length) return DecodeResult::need_more;
  frame->assign(in.peek() + kHeaderBytes, length);
  in.retrieve(kHeaderBytes + length);
  return DecodeResult::frame;
}

Result<void> LengthPrefixCodec::encode(std::string_view payload, Buffer& out) {
  if (payload.size() > std::numeric_limits<uint32_t>::max()) {
    return Error(Errc::frame_too_large, "frame of " + std::to_string(payload.size()) +
                                            " bytes: the 4-byte header counts at most " +
                                            std::to_string(std::numeric_limits<uint32_t>::max()));
  }
  // One reservation for header and payload, so the append never grows twice.
  out.ensure_writable(kHeaderBytes + payload.size());
  out.append_u32_be(static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return {};
}

Error LengthPrefixCodec::too_large_error() const {
  return Error(Errc::frame_too_large, "frame over " + std::to_string(max_frame_) + " bytes");
}

}  // namespace tcpkit

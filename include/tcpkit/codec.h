/// \file
/// codec.h: what a framing codec's decode() found in a Buffer.
///
/// Shared by LineCodec and LengthPrefixCodec. Codecs only cut bytes into
/// messages and back; they do no I/O and hold no per-connection state, so one
/// codec object may serve every connection of a loop (or of all loops: decode
/// and encode are const or static).
#pragma once

namespace tcpkit {

enum class DecodeResult {
  frame,      ///< one message was moved out and consumed from the buffer
  need_more,  ///< no complete message yet; nothing was consumed
  too_large,  ///< the message is over the codec's limit; nothing was consumed,
              ///< and the connection should be closed with the codec's error
};

}  // namespace tcpkit

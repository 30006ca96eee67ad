// Fuzzes LengthPrefixCodec::decode with arbitrary bytes arriving in
// fuzzer-chosen pieces. Invariants: a frame never exceeds max_frame and is
// exactly the payload its header announced, bytes consumed never exceed
// bytes fed, too_large comes as soon as an oversize header is readable and
// consumes nothing, and an encode() then decode() round trip is lossless.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_check.h"
#include "tcpkit/buffer.h"
#include "tcpkit/length_prefix_codec.h"

using tcpkit::Buffer;
using tcpkit::DecodeResult;
using tcpkit::LengthPrefixCodec;

namespace {

uint32_t header_at(const std::string& s, size_t at) {
  auto byte = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<unsigned char>(s[at + i]));
  };
  return byte(0) << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const size_t max_frame = in.ConsumeIntegralInRange<size_t>(0, 4096);
  const LengthPrefixCodec codec(max_frame);

  // Round trip of one fuzzer-chosen payload within the limit.
  {
    std::string payload = in.ConsumeRandomLengthString(max_frame);
    Buffer out;
    check(static_cast<bool>(LengthPrefixCodec::encode(payload, out)),
          "a payload within the limit encodes");
    std::string frame;
    check(codec.decode(out, &frame) == DecodeResult::frame, "an encoded frame decodes");
    check(frame == payload && out.readable_bytes() == 0, "encode/decode round trip is lossless");
  }

  Buffer buffer;
  std::string fed;
  size_t consumed = 0;
  while (in.remaining_bytes() > 0) {
    std::string piece = in.ConsumeRandomLengthString(1024);
    buffer.append(piece);
    fed += piece;
    for (;;) {
      std::string frame;
      const size_t before = buffer.readable_bytes();
      DecodeResult got = codec.decode(buffer, &frame);
      const size_t rest = fed.size() - consumed;
      if (got == DecodeResult::need_more) {
        check(buffer.readable_bytes() == before, "need_more consumes nothing");
        check(rest < 4 ||
                  (header_at(fed, consumed) <= max_frame && rest < 4 + header_at(fed, consumed)),
              "need_more only while the header or payload is incomplete");
        break;
      }
      if (got == DecodeResult::too_large) {
        check(buffer.readable_bytes() == before, "too_large consumes nothing");
        check(rest >= 4 && header_at(fed, consumed) > max_frame,
              "too_large only for an oversize header");
        return 0;  // the caller closes the connection
      }
      const uint32_t length = header_at(fed, consumed);
      check(frame.size() <= max_frame, "a frame never exceeds max_frame");
      check(frame.size() == length, "the frame has the announced length");
      check(frame == fed.substr(consumed + 4, length), "the frame is the payload that was fed");
      check(before - buffer.readable_bytes() == 4 + frame.size(), "consumes header and payload");
      consumed += 4 + frame.size();
      check(consumed <= fed.size(), "bytes consumed <= bytes fed");
    }
    check(consumed + buffer.readable_bytes() == fed.size(),
          "every byte is consumed or still readable");
  }
  return 0;
}

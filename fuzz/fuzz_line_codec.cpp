// Fuzzes LineCodec::decode with arbitrary bytes arriving in fuzzer-chosen
// pieces, against a plain reference model of the same rules: a line ends at
// '\n', a "\r\n" terminator loses its '\r', and a line (or a partial line
// without its '\n', not counting a trailing '\r') over max_line is too_large.
// Invariants: lines never exceed the limit, never contain '\n', bytes
// consumed never exceed bytes fed, and every byte consumed is accounted for.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_check.h"
#include "tcpkit/buffer.h"
#include "tcpkit/line_codec.h"

using tcpkit::Buffer;
using tcpkit::DecodeResult;
using tcpkit::LineCodec;

namespace {

// What decode() must do with the unconsumed stream `rest`.
DecodeResult expected(const std::string& rest, size_t max_line, std::string* line,
                      size_t* consumed) {
  auto eol = rest.find('\n');
  if (eol == std::string::npos) {
    size_t partial = rest.size();
    if (partial > 0 && rest.back() == '\r') --partial;
    return partial > max_line ? DecodeResult::too_large : DecodeResult::need_more;
  }
  size_t length = eol;
  if (length > 0 && rest[length - 1] == '\r') --length;
  if (length > max_line) return DecodeResult::too_large;
  *line = rest.substr(0, length);
  *consumed = eol + 1;
  return DecodeResult::frame;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const size_t max_line = in.ConsumeIntegralInRange<size_t>(0, 300);
  const LineCodec codec(max_line);
  Buffer buffer;
  std::string fed;  // everything appended so far
  size_t consumed = 0;
  while (in.remaining_bytes() > 0) {
    std::string piece = in.ConsumeRandomLengthString(512);
    if (piece.empty() && in.remaining_bytes() == 0) break;
    buffer.append(piece);
    fed += piece;
    for (;;) {
      std::string line;
      const size_t before = buffer.readable_bytes();
      DecodeResult got = codec.decode(buffer, &line);
      std::string want_line;
      size_t want_consumed = 0;
      DecodeResult want = expected(fed.substr(consumed), max_line, &want_line, &want_consumed);
      check(got == want, "decode() agrees with the reference model");
      if (got != DecodeResult::frame) {
        check(buffer.readable_bytes() == before, "need_more/too_large consume nothing");
        if (got == DecodeResult::too_large) return 0;  // the caller closes the connection
        break;
      }
      check(line == want_line, "the line is the reference line");
      check(line.size() <= max_line, "a line never exceeds max_line");
      check(line.find('\n') == std::string::npos, "a line never contains '\\n'");
      consumed += before - buffer.readable_bytes();
      check(before - buffer.readable_bytes() == want_consumed,
            "consumes the line and its terminator");
      check(consumed <= fed.size(), "bytes consumed <= bytes fed");
    }
    check(consumed + buffer.readable_bytes() == fed.size(),
          "every byte is consumed or still readable");
  }
  return 0;
}

// Fuzzes the streaming Transcoder with arbitrary bytes in fuzzer-chosen
// pieces, decoding GBK, GB18030, Big5 or UTF-8 to UTF-8, and encoding
// UTF-8 to GBK. Invariants: never crash; output to UTF-8 is valid UTF-8
// (invalid input comes out as "\xHH" escapes, which are ASCII); and a stream
// split anywhere converts exactly as the same bytes fed in one piece, which
// is the promise that a character split across reads never shows.
#include <fuzzer/FuzzedDataProvider.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "tcpkit/transcoder.h"

using tcpkit::Transcoder;

namespace {

// A strict UTF-8 check (RFC 3629): no overlong forms, no surrogates, at most U+10FFFF.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = cp << 6 | (cc & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))) return false;
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;
    i += n + 1;
  }
  return true;
}

struct Pair {
  const char* from;
  const char* to;
};
constexpr std::array<Pair, 5> kPairs{{{"gbk", "utf-8"},
                                      {"gb18030", "utf-8"},
                                      {"big5", "utf-8"},
                                      {"utf-8", "utf-8"},
                                      {"utf-8", "gbk"}}};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const Pair pair = kPairs[in.ConsumeIntegralInRange<size_t>(0, kPairs.size() - 1)];
  auto split = Transcoder::open(pair.from, pair.to);
  auto whole = Transcoder::open(pair.from, pair.to);
  check(split.ok() && whole.ok(), "the fuzzed encodings exist");

  std::string fed;
  std::string out;
  while (in.remaining_bytes() > 0) {
    std::string piece = in.ConsumeRandomLengthString(64);
    fed += piece;
    split->feed(piece, &out);
    check(split->pending_bytes() <= 8, "only an incomplete character is held back");
  }
  split->finish(&out);
  std::string reference = whole->feed(fed);
  reference += whole->finish();
  if (std::string_view(pair.to) == "utf-8")
    check(valid_utf8(out), "output to UTF-8 is valid UTF-8");
  check(out == reference, "splitting the input does not change the output");
  check(split->invalid_bytes() == whole->invalid_bytes(),
        "splitting does not change the invalid count");
  check(split->pending_bytes() == 0, "finish() leaves nothing held");
  return 0;
}

// Fuzzes parse_proxy_header. Invariants: never crash or read past the
// input; a complete header is consumed alone (the same answer from exactly
// its bytes, and need_more from one byte fewer), never longer than the
// version allows; more bytes never turn need_more into something earlier
// prefixes disagree with, nor invalid into valid; what parses re-encodes to
// a header that parses to the same addresses and TLVs.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "tcpkit/proxy_protocol.h"

using tcpkit::parse_proxy_header;
using tcpkit::ProxyParseStatus;

namespace {

void check_round_trip(const tcpkit::ProxyHeader& header) {
  if (!header.source || !header.destination) return;
  check(header.source->family() == header.destination->family(), "both addresses share a family");
  std::string encoded =
      header.version == 1
          ? tcpkit::encode_proxy_v1(*header.source, *header.destination)
          : tcpkit::encode_proxy_v2(*header.source, *header.destination, header.tlvs);
  auto again = parse_proxy_header(encoded);
  check(again.status == ProxyParseStatus::done, "a re-encoded header parses");
  check(again.consumed == encoded.size(), "a re-encoded header is consumed whole");
  check(again.header.source == header.source, "the source survives a round trip");
  check(again.header.destination == header.destination, "the destination survives a round trip");
  check(again.header.tlvs == header.tlvs, "the TLVs survive a round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto r = parse_proxy_header(input);
  switch (r.status) {
    case ProxyParseStatus::need_more:
      check(r.consumed == 0, "need_more consumes nothing");
      check(size < tcpkit::kProxyV2MaxLength, "need_more stops at the largest header");
      if (size > 0) {
        check(parse_proxy_header(input.substr(0, size - 1)).status == ProxyParseStatus::need_more,
              "a prefix of a possible header is a possible header");
      }
      break;
    case ProxyParseStatus::invalid: {
      check(!r.reason.empty(), "invalid says why");
      std::string longer(input);
      longer += "\r\n";
      check(parse_proxy_header(longer).status == ProxyParseStatus::invalid,
            "more bytes never repair a header");
      break;
    }
    case ProxyParseStatus::done: {
      check(r.consumed > 0 && r.consumed <= size, "done consumes part of the input");
      check(r.header.version == 1 || r.header.version == 2, "the version is known");
      check(r.header.version == 2 || r.consumed <= tcpkit::kProxyV1MaxLength,
            "a v1 line is at most 107 bytes");
      check(r.consumed <= tcpkit::kProxyV2MaxLength, "a header is at most 16 + 65535 bytes");
      check(!r.header.local || (!r.header.source && !r.header.destination),
            "LOCAL carries no addresses");
      auto exact = parse_proxy_header(input.substr(0, r.consumed));
      check(exact.status == ProxyParseStatus::done && exact.consumed == r.consumed,
            "the header alone parses the same");
      check(
          parse_proxy_header(input.substr(0, r.consumed - 1)).status == ProxyParseStatus::need_more,
          "one byte short of a header asks for more");
      check_round_trip(r.header);
      break;
    }
  }
  return 0;
}

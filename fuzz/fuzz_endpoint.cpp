// Fuzzes the address parsers users and peers feed text to: Endpoint::parse
// (both forms), split_host_port and parse_port. Besides "never crash", it
// checks that what parses formats back to text that parses to the same
// address, and that text with an embedded NUL is refused (the C string
// calls underneath would silently stop at it).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "tcpkit/endpoint.h"

using tcpkit::Endpoint;

namespace {

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

// Formatting keeps an IPv6 zone (as the interface name or its index), so the
// text parses back to an equal endpoint.
void check_round_trip(const Endpoint& ep) {
  auto again = Endpoint::parse(ep.to_string());
  check(again.ok(), "to_string() of a parsed endpoint parses");
  check(*again == ep, "round trip gives an equal endpoint, zone included");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const uint16_t port = in.ConsumeIntegral<uint16_t>();
  const std::string text = in.ConsumeRemainingBytesAsString();

  if (auto ep = Endpoint::parse(text)) {
    check(!has_nul(text), "Endpoint::parse refuses embedded NUL");
    check_round_trip(*ep);
  }
  if (auto ep = Endpoint::parse(std::string_view(text), port)) {
    check(!has_nul(text), "Endpoint::parse(host, port) refuses embedded NUL");
    check(ep->port() == port, "parse(host, port) keeps the port");
    check_round_trip(*ep);
  }
  if (auto hp = Endpoint::split_host_port(text)) {
    check(!hp->first.empty(), "split_host_port never returns an empty host");
    check(hp->first.size() < text.size(), "the host is part of the text");
  } else {
    check(!hp.error().message().empty(), "errors explain themselves");
  }
  if (auto p = Endpoint::parse_port(text)) {
    check(std::to_string(*p) == std::to_string(std::strtoul(text.c_str(), nullptr, 10)),
          "parse_port is decimal");
  }
  return 0;
}

// Fuzzes Cidr::parse and AccessList matching. Invariants: never crash; what
// parses formats to a canonical text that parses to the same rule (and
// formats the same again); a network contains its own address; an IPv4
// peer and its IPv4-mapped IPv6 form always match alike; deny wins.
#include <fuzzer/FuzzedDataProvider.h>

#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fuzz_check.h"
#include "tcpkit/cidr.h"

using tcpkit::AccessList;
using tcpkit::Cidr;
using tcpkit::Endpoint;

namespace {

Endpoint v4_peer(uint32_t address) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(address);
  in.sin_port = htons(1234);
  return Endpoint(reinterpret_cast<sockaddr*>(&in), sizeof in);
}

Endpoint mapped_peer(uint32_t address) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_addr.s6_addr[10] = 0xff;
  in6.sin6_addr.s6_addr[11] = 0xff;
  uint32_t be = htonl(address);
  std::memcpy(&in6.sin6_addr.s6_addr[12], &be, 4);
  in6.sin6_port = htons(1234);
  return Endpoint(reinterpret_cast<sockaddr*>(&in6), sizeof in6);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const uint32_t address = in.ConsumeIntegral<uint32_t>();
  const std::string text = in.ConsumeRemainingBytesAsString();
  auto rule = Cidr::parse(text);
  if (!rule) {
    check(rule.error().message().find("CIDR '") != std::string::npos, "errors name the text");
    return 0;
  }
  check(text.find('\0') == std::string::npos, "embedded NUL is refused");
  const std::string canonical = rule->to_string();
  auto again = Cidr::parse(canonical);
  check(again.ok(), "the canonical text parses");
  check(*again == *rule, "the canonical text is the same rule");
  check(again->to_string() == canonical, "the canonical text is stable");
  check(
      rule->prefix_length() >= 0 && rule->prefix_length() <= (rule->family() == AF_INET ? 32 : 128),
      "the prefix is within its family's range");

  // The network's own address (the text before '/') is inside it.
  auto own = Endpoint::parse(canonical.substr(0, canonical.rfind('/')), 1);
  check(own.ok(), "the network address is an address");
  check(rule->contains(*own), "a network contains its own address");

  const bool v4 = rule->contains(v4_peer(address));
  check(v4 == rule->contains(mapped_peer(address)), "IPv4 and IPv4-mapped peers match alike");

  AccessList list;
  list.allow(*rule);
  check(list.permits(v4_peer(address)) == v4, "allow-only permits exactly the matches");
  list.deny(*rule);
  check(!list.permits(v4_peer(address)) || !v4, "deny wins over allow");
  check(!list.permits(*own), "deny wins for the network's own address");
  return 0;
}

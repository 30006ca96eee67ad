#include "tcpkit/endpoint.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>

#include <cstring>

using tcpkit::Endpoint;
using tcpkit::Errc;

TEST(Endpoint, ParsesIpv4) {
  auto ep = Endpoint::parse("127.0.0.1:8888");
  ASSERT_TRUE(ep) << ep.error().message();
  EXPECT_EQ(ep->host(), "127.0.0.1");
  EXPECT_EQ(ep->port(), 8888);
  EXPECT_FALSE(ep->is_v6());
  EXPECT_EQ(ep->to_string(), "127.0.0.1:8888");
}

TEST(Endpoint, ParsesBracketedIpv6) {
  auto ep = Endpoint::parse("[::1]:8888");
  ASSERT_TRUE(ep) << ep.error().message();
  EXPECT_TRUE(ep->is_v6());
  EXPECT_EQ(ep->host(), "::1");
  EXPECT_EQ(ep->to_string(), "[::1]:8888");
}

TEST(Endpoint, RejectsBadInputWithClearErrors) {
  struct Case { const char* text; Errc code; };
  for (auto c : {Case{"127.0.0.1:999999", Errc::bad_port}, Case{"1.2.3:80", Errc::bad_address},
                 Case{"[::1", Errc::bad_host}, Case{":80", Errc::bad_host},
                 Case{"127.0.0.1", Errc::missing_port}, Case{"127.0.0.1:", Errc::bad_port},
                 Case{"127.0.0.1:8x", Errc::bad_port}, Case{"::1:80", Errc::bad_host}}) {
    auto ep = Endpoint::parse(c.text);
    ASSERT_FALSE(ep) << c.text;
    EXPECT_EQ(ep.error().code(), tcpkit::make_error_code(c.code)) << c.text << ": " << ep.error().message();
    EXPECT_NE(ep.error().message().find(c.text), std::string::npos) << ep.error().message();
  }
}

TEST(Endpoint, ResolvesLocalhost) {
  auto list = Endpoint::resolve("localhost:8888");
  ASSERT_TRUE(list) << list.error().message();
  ASSERT_FALSE(list->empty());
  for (const auto& ep : *list) EXPECT_EQ(ep.port(), 8888);
}

TEST(Endpoint, ResolveOfUnknownNameFails) {
  auto list = Endpoint::resolve("no-such-host.invalid", 80);
  ASSERT_FALSE(list);
  EXPECT_NE(list.error().message().find("no-such-host.invalid"), std::string::npos);
}

// Regression (found by fuzz/fuzz_endpoint): text with an embedded NUL was cut
// short at the NUL by inet_pton, so "127.0.0.1\0junk" parsed as 127.0.0.1.
TEST(Endpoint, RejectsEmbeddedNul) {
  using namespace std::string_view_literals;
  for (auto text : {"127.0.0.1\0junk"sv, "::1\0"sv, "fe80::1%lo\0\0x"sv}) {
    auto ep = Endpoint::parse(text, 80);
    ASSERT_FALSE(ep) << "parsed as " << ep->to_string();
    EXPECT_EQ(ep.error().code(), tcpkit::make_error_code(Errc::bad_address));
  }
  EXPECT_FALSE(Endpoint::parse("127.0.0.1\0x:80"sv));
  EXPECT_FALSE(Endpoint::parse("[::1\0]:80"sv));
}

// An Endpoint holds exactly a sockaddr_in or sockaddr_in6: what goes in
// through the kernel's form comes back out byte for byte, scope id included.
TEST(Endpoint, RoundTripsIpv6WithScopeIdThroughSockaddr) {
  const unsigned lo = ::if_nametoindex("lo");
  ASSERT_NE(lo, 0u);
  sockaddr_storage ss{};
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(8443);
  ASSERT_EQ(::inet_pton(AF_INET6, "fe80::1", &in6->sin6_addr), 1);
  in6->sin6_scope_id = lo;
  Endpoint ep(reinterpret_cast<const sockaddr*>(&ss), sizeof(sockaddr_in6));
  EXPECT_TRUE(ep.is_v6());
  EXPECT_EQ(ep.port(), 8443);
  EXPECT_EQ(ep.host(), "fe80::1");
  ASSERT_EQ(ep.sockaddr_len(), sizeof(sockaddr_in6));
  EXPECT_EQ(std::memcmp(ep.sockaddr_ptr(), in6, sizeof(sockaddr_in6)), 0);
  auto parsed = Endpoint::parse("[fe80::1%lo]:8443");
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, ep);
  EXPECT_EQ(reinterpret_cast<const sockaddr_in6*>(parsed->sockaddr_ptr())->sin6_scope_id, lo);
  // The scope is part of the address: the same address without it differs.
  EXPECT_FALSE(*Endpoint::parse("[fe80::1]:8443") == ep);
}

TEST(Endpoint, RoundTripsIpv4ThroughSockaddrAndCopies) {
  sockaddr_in in4{};
  in4.sin_family = AF_INET;
  in4.sin_port = htons(443);
  ASSERT_EQ(::inet_pton(AF_INET, "10.1.2.3", &in4.sin_addr), 1);
  Endpoint ep(reinterpret_cast<const sockaddr*>(&in4), sizeof in4);
  ASSERT_EQ(ep.sockaddr_len(), sizeof(sockaddr_in));
  EXPECT_EQ(std::memcmp(ep.sockaddr_ptr(), &in4, sizeof in4), 0);
  EXPECT_EQ(ep, *Endpoint::parse("10.1.2.3:443"));
  Endpoint copy = ep;
  copy.set_port(444);
  EXPECT_EQ(ep.port(), 443);
  EXPECT_EQ(copy.to_string(), "10.1.2.3:444");
  EXPECT_EQ(Endpoint().to_string(), "0.0.0.0:0");
  // A v6 endpoint assigned over a v4 one takes all of it.
  copy = Endpoint::loopback_v6(80);
  EXPECT_EQ(copy.to_string(), "[::1]:80");
  EXPECT_EQ(copy.sockaddr_len(), sizeof(sockaddr_in6));
}

TEST(Endpoint, UnspecifiedIsTheWildcardOnly) {
  EXPECT_TRUE(tcpkit::Endpoint::any_v4(80).is_unspecified());
  EXPECT_TRUE(tcpkit::Endpoint::parse("[::]:80")->is_unspecified());
  EXPECT_FALSE(tcpkit::Endpoint::loopback_v4(80).is_unspecified());
  EXPECT_FALSE(tcpkit::Endpoint::loopback_v6(80).is_unspecified());
  EXPECT_FALSE(tcpkit::Endpoint::parse("0.0.0.1:80")->is_unspecified());
  EXPECT_TRUE(tcpkit::Endpoint().is_unspecified());  // the default is 0.0.0.0:0
}

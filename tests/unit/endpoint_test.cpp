#include "tcpkit/endpoint.h"

#include <gtest/gtest.h>

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

#include "tcpkit/endpoint.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <sys/un.h>

#include <cstddef>
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
  struct Case {
    const char* text;
    Errc code;
  };
  for (auto c : {Case{"127.0.0.1:999999", Errc::bad_port}, Case{"1.2.3:80", Errc::bad_address},
                 Case{"[::1", Errc::bad_host}, Case{":80", Errc::bad_host},
                 Case{"127.0.0.1", Errc::missing_port}, Case{"127.0.0.1:", Errc::bad_port},
                 Case{"127.0.0.1:8x", Errc::bad_port}, Case{"::1:80", Errc::bad_host}}) {
    auto ep = Endpoint::parse(c.text);
    ASSERT_FALSE(ep) << c.text;
    EXPECT_EQ(ep.error().code(), tcpkit::make_error_code(c.code))
        << c.text << ": " << ep.error().message();
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

TEST(Endpoint, ParsesAUnixPathAndFormatsItBack) {
  auto ep = Endpoint::parse("unix:/tmp/a.sock");
  ASSERT_TRUE(ep) << ep.error().message();
  EXPECT_TRUE(ep->is_unix());
  EXPECT_FALSE(ep->is_abstract());
  EXPECT_EQ(ep->family(), AF_UNIX);
  EXPECT_EQ(ep->unix_path(), "/tmp/a.sock");
  EXPECT_EQ(ep->to_string(), "unix:/tmp/a.sock");
  EXPECT_EQ(ep->port(), 0);
  EXPECT_FALSE(ep->credentials());
  // The kernel's form: family, path, terminating NUL.
  const auto* un = reinterpret_cast<const sockaddr_un*>(ep->sockaddr_ptr());
  EXPECT_EQ(un->sun_family, AF_UNIX);
  EXPECT_STREQ(un->sun_path, "/tmp/a.sock");
  EXPECT_EQ(ep->sockaddr_len(), offsetof(sockaddr_un, sun_path) + std::strlen("/tmp/a.sock") + 1);
}

TEST(Endpoint, ParsesAnAbstractNameWithoutATrailingNul) {
  auto ep = Endpoint::parse("unix:@tcpkit-test");
  ASSERT_TRUE(ep) << ep.error().message();
  EXPECT_TRUE(ep->is_abstract());
  EXPECT_EQ(ep->unix_path(), "@tcpkit-test");
  EXPECT_EQ(ep->to_string(), "unix:@tcpkit-test");
  const auto* un = reinterpret_cast<const sockaddr_un*>(ep->sockaddr_ptr());
  EXPECT_EQ(un->sun_path[0], '\0');
  EXPECT_EQ(std::string(un->sun_path + 1, std::strlen("tcpkit-test")), "tcpkit-test");
  EXPECT_EQ(ep->sockaddr_len(), offsetof(sockaddr_un, sun_path) + 1 + std::strlen("tcpkit-test"));
}

TEST(Endpoint, ResolveTakesUnixTextWithoutTheResolver) {
  auto list = Endpoint::resolve("unix:/run/x.sock");
  ASSERT_TRUE(list) << list.error().message();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->front().unix_path(), "/run/x.sock");
}

TEST(Endpoint, RejectsATooLongUnixPathSayingHowLong) {
  const std::string longest(107, 'a');
  EXPECT_TRUE(Endpoint::unix_socket(longest));
  auto too_long = Endpoint::parse("unix:/" + std::string(120, 'a'));
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().code(), std::errc::filename_too_long);
  EXPECT_NE(too_long.error().message().find("121 bytes long; at most 107 fit"), std::string::npos)
      << too_long.error().message();
  EXPECT_FALSE(Endpoint::unix_socket("@" + std::string(108, 'b')));
}

TEST(Endpoint, RejectsAnEmptyUnixPathAndAnEmbeddedNul) {
  EXPECT_EQ(Endpoint::parse("unix:").error().code(), Errc::bad_address);
  EXPECT_EQ(Endpoint::parse("unix:@").error().code(), Errc::bad_address);
  EXPECT_EQ(Endpoint::parse(std::string_view("unix:/tmp/a\0b", 13)).error().code(),
            Errc::bad_address);
}

TEST(Endpoint, UnixCopiesShareThePathAndCompareByIt) {
  auto a = *Endpoint::parse("unix:/tmp/a.sock");
  Endpoint copy = a;
  EXPECT_EQ(copy.sockaddr_ptr(), a.sockaddr_ptr()) << "a copy shares the path block";
  EXPECT_EQ(copy, a);
  EXPECT_EQ(a, *Endpoint::parse("unix:/tmp/a.sock"));
  EXPECT_FALSE(a == *Endpoint::parse("unix:/tmp/b.sock"));
  EXPECT_FALSE(a == *Endpoint::parse("unix:@/tmp/a.sock"));
  EXPECT_FALSE(a == Endpoint::loopback_v4(0));
}

TEST(Endpoint, UnixPeerCarriesCredentialsInlineAndShowsThem) {
  auto a = *Endpoint::parse("unix:/tmp/a.sock");
  auto peer = a.with_credentials({1234, 1000, 100});
  ASSERT_TRUE(peer.credentials());
  EXPECT_EQ(peer.credentials()->pid, 1234);
  EXPECT_EQ(peer.credentials()->uid, 1000u);
  EXPECT_EQ(peer.to_string(), "unix:/tmp/a.sock (pid 1234, uid 1000)");
  EXPECT_EQ(peer.sockaddr_ptr(), a.sockaddr_ptr());
  EXPECT_EQ(peer, a) << "credentials are not part of the address";
}

TEST(Endpoint, StaysTheSizeOfSockaddrIn6WithUnixSupport) {
  // Two per connection: a sockaddr_un inline would add some 200 bytes.
  EXPECT_EQ(sizeof(Endpoint), sizeof(sockaddr_in6));
}

TEST(Endpoint, UnixPathOutlivesTheEndpointItCameFrom) {
  Endpoint copy;
  Endpoint moved;
  {
    auto original = *Endpoint::parse("unix:/tmp/shared.sock");
    copy = original;
    Endpoint second(original);
    moved = std::move(second);
    EXPECT_EQ(second, Endpoint()) << "a moved-from endpoint is 0.0.0.0:0";
    copy = copy;  // self-assignment keeps the path
  }
  EXPECT_EQ(copy.to_string(), "unix:/tmp/shared.sock");
  EXPECT_EQ(moved.to_string(), "unix:/tmp/shared.sock");
  EXPECT_EQ(copy.sockaddr_ptr(), moved.sockaddr_ptr());
  copy = Endpoint::loopback_v4(80);
  EXPECT_EQ(copy.to_string(), "127.0.0.1:80");
  EXPECT_EQ(moved.unix_path(), "/tmp/shared.sock");
}

TEST(Endpoint, WrapsAKernelUnixAddress) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::strcpy(un.sun_path, "/tmp/k.sock");
  Endpoint ep(reinterpret_cast<sockaddr*>(&un), offsetof(sockaddr_un, sun_path) + 12);
  EXPECT_EQ(ep.to_string(), "unix:/tmp/k.sock");
  Endpoint unnamed(reinterpret_cast<sockaddr*>(&un), sizeof(sa_family_t));
  EXPECT_TRUE(unnamed.is_unix());
  EXPECT_EQ(unnamed.unix_path(), "");
  EXPECT_EQ(unnamed.to_string(), "unix:(unnamed)");
}

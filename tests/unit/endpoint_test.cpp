#include "tcpkit/endpoint.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

using tcpkit::Endpoint;
using tcpkit::Errc;

namespace {

uint32_t scope_id_of(const Endpoint& ep) {
  return reinterpret_cast<const sockaddr_in6*>(ep.sockaddr_ptr())->sin6_scope_id;
}

}  // namespace

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
  EXPECT_EQ(ep.host(), "fe80::1%lo");
  ASSERT_EQ(ep.sockaddr_len(), sizeof(sockaddr_in6));
  EXPECT_EQ(std::memcmp(ep.sockaddr_ptr(), in6, sizeof(sockaddr_in6)), 0);
  auto parsed = Endpoint::parse("[fe80::1%lo]:8443");
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, ep);
  EXPECT_EQ(reinterpret_cast<const sockaddr_in6*>(parsed->sockaddr_ptr())->sin6_scope_id, lo);
  // The scope is part of the address: the same address without it differs.
  EXPECT_FALSE(*Endpoint::parse("[fe80::1]:8443") == ep);
}

// Fills stack that the next call's frame will reuse.
[[gnu::noinline]] void dirty_the_stack() {
  volatile unsigned char junk[8192];
  for (auto& b : junk) b = 0xA5;
}

// Regression (found by fuzz/fuzz_endpoint, in a clang build): the bytes of
// an Endpoint past the first 16, where sockaddr_in6 keeps sin6_scope_id,
// were left as the stack had them, so "[::1]:80" could parse with a stray
// zone: unequal to itself, and to_string() showed it.
TEST(Endpoint, ParsedIpv6HasNoZoneUnlessTheTextNamesOne) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(80);
  in6.sin6_addr = in6addr_loopback;
  const Endpoint expected(reinterpret_cast<const sockaddr*>(&in6), sizeof in6);
  for (int i = 0; i < 10; ++i) {
    dirty_the_stack();
    auto ep = Endpoint::parse("[::1]:80");
    ASSERT_TRUE(ep) << ep.error().message();
    EXPECT_EQ(scope_id_of(*ep), 0u);
    EXPECT_EQ(*ep, expected);
    EXPECT_EQ(ep->to_string(), "[::1]:80");
    dirty_the_stack();
    EXPECT_EQ(scope_id_of(*Endpoint::parse("::1", 80)), 0u);
  }
}

// Regression: to_string() dropped the IPv6 zone, so "[fe80::1%lo]:80" came
// back as "[fe80::1]:80", which parses to another address. The zone is
// written as the interface's name, or as its number when no interface has
// that index, and either parses back to the same endpoint.
TEST(Endpoint, FormatsTheIpv6ZoneAndParsesItBack) {
  auto ep = Endpoint::parse("[fe80::1%lo]:80");
  ASSERT_TRUE(ep) << ep.error().message();
  EXPECT_EQ(ep->host(), "fe80::1%lo");
  EXPECT_EQ(ep->to_string(), "[fe80::1%lo]:80");
  auto again = Endpoint::parse(ep->to_string());
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*again, *ep);
  auto from_host = Endpoint::parse(ep->host(), ep->port());
  ASSERT_TRUE(from_host) << from_host.error().message();
  EXPECT_EQ(*from_host, *ep);

  // No interface has this index: the number itself.
  auto numbered = Endpoint::parse("[fe80::1%4000000000]:443");
  ASSERT_TRUE(numbered) << numbered.error().message();
  EXPECT_EQ(scope_id_of(*numbered), 4000000000u);
  EXPECT_EQ(numbered->to_string(), "[fe80::1%4000000000]:443");
  EXPECT_EQ(*Endpoint::parse(numbered->to_string()), *numbered);

  // No zone, nothing added.
  EXPECT_EQ(Endpoint::parse("[fe80::1]:80")->to_string(), "[fe80::1]:80");
}

// Regression: a numeric zone ("%1", RFC 4007's form) was looked up only as
// an interface name and refused.
TEST(Endpoint, AcceptsANumericZone) {
  const unsigned lo = ::if_nametoindex("lo");
  ASSERT_NE(lo, 0u);
  const std::string zone = std::to_string(lo);
  auto ep = Endpoint::parse("[fe80::1%" + zone + "]:80");
  ASSERT_TRUE(ep) << ep.error().message();
  EXPECT_EQ(scope_id_of(*ep), lo);
  EXPECT_EQ(*ep, *Endpoint::parse("[fe80::1%lo]:80"));
  EXPECT_EQ(ep->to_string(), "[fe80::1%lo]:80") << "written back as the interface's name";
  auto bare = Endpoint::parse("fe80::1%" + zone, 80);
  ASSERT_TRUE(bare) << bare.error().message();
  EXPECT_EQ(*bare, *ep);
  auto largest = Endpoint::parse("fe80::1%4294967295", 80);
  ASSERT_TRUE(largest) << largest.error().message();
  EXPECT_EQ(scope_id_of(*largest), 4294967295u);
  // Neither an interface nor a 32-bit number.
  for (const char* text :
       {"fe80::1%4294967296", "fe80::1%-1", "fe80::1%+1", "fe80::1%1x", "fe80::1%no-such-if0"}) {
    auto refused = Endpoint::parse(text, 80);
    ASSERT_FALSE(refused) << text << " parsed as " << refused->to_string();
    EXPECT_EQ(refused.error().code(), tcpkit::make_error_code(Errc::bad_address)) << text;
    EXPECT_NE(refused.error().message().find("interface"), std::string::npos)
        << refused.error().message();
  }
}

// Regression: "[::1%]:80" (an empty zone) parsed as [::1]:80, and
// "[1.2.3.4]:80" as 1.2.3.4:80, though brackets hold an IPv6 address only.
// Both are refused, saying why, by either parse() and by resolve().
TEST(Endpoint, RefusesAnEmptyZoneAndBracketedIpv4) {
  struct Case {
    const char* text;
    const char* why;
  };
  for (auto c : {Case{"[::1%]:80", "empty zone"}, Case{"[fe80::1%]:80", "empty zone"},
                 Case{"[1.2.3.4]:80", "brackets hold an IPv6 address"},
                 Case{"[0.0.0.0]:0", "brackets hold an IPv6 address"}}) {
    auto ep = Endpoint::parse(c.text);
    ASSERT_FALSE(ep) << c.text << " parsed as " << ep->to_string();
    EXPECT_EQ(ep.error().code(), tcpkit::make_error_code(Errc::bad_address)) << c.text;
    EXPECT_NE(ep.error().message().find(c.text), std::string::npos) << ep.error().message();
    EXPECT_NE(ep.error().message().find(c.why), std::string::npos) << ep.error().message();
    auto resolved = Endpoint::resolve(c.text);
    EXPECT_FALSE(resolved) << c.text << " resolved";
  }
  for (const char* host : {"::1%", "[::1%]", "[1.2.3.4]"}) {
    auto ep = Endpoint::parse(host, 80);
    ASSERT_FALSE(ep) << host << " parsed as " << ep->to_string();
    EXPECT_EQ(ep.error().code(), tcpkit::make_error_code(Errc::bad_address)) << host;
    EXPECT_FALSE(Endpoint::resolve(host, 80)) << host << " resolved";
  }
  // Brackets stay optional around IPv6, and IPv4 without them is fine.
  EXPECT_TRUE(Endpoint::parse("[::1]", 80));
  EXPECT_TRUE(Endpoint::parse("1.2.3.4", 80));
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

TEST(Endpoint, LoopbackIsAllOf127And1AndTheirMappedForm) {
  for (const char* text : {"127.0.0.1:80", "127.255.0.9:1", "[::1]:80", "[::ffff:127.0.0.2]:80"}) {
    EXPECT_TRUE(tcpkit::Endpoint::parse(text)->is_loopback()) << text;
  }
  for (const char* text : {"128.0.0.1:80", "126.255.255.255:80", "0.0.0.0:80", "192.0.2.1:80",
                           "[::]:80", "[::2]:80", "[::ffff:128.0.0.1]:80", "[fe80::1]:80"}) {
    EXPECT_FALSE(tcpkit::Endpoint::parse(text)->is_loopback()) << text;
  }
  EXPECT_FALSE(tcpkit::Endpoint::parse("unix:/tmp/x.sock")->is_loopback());
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

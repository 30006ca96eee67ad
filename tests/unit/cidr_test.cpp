// Cidr parsing and matching, and AccessList's allow/deny semantics (ncat's:
// deny wins; any allow rule makes the list exclusive).
#include "tcpkit/cidr.h"

#include <gtest/gtest.h>

#include <string>

using tcpkit::AccessList;
using tcpkit::Cidr;
using tcpkit::Endpoint;
using tcpkit::Errc;

namespace {

Cidr cidr(const char* text) {
  auto c = Cidr::parse(text);
  EXPECT_TRUE(c) << text << ": " << c.error().message();
  return c ? *c : *Cidr::parse("0.0.0.0/32");
}

Endpoint peer(const char* host) {
  auto ep = Endpoint::parse(host, 4242);
  EXPECT_TRUE(ep) << host << ": " << ep.error().message();
  return ep ? *ep : Endpoint();
}

}  // namespace

TEST(Cidr, ParsesNetworksAndHostsInCanonicalForm) {
  struct Case {
    const char* text;
    const char* canonical;
    int family;
    int prefix;
  };
  for (auto c :
       {Case{"10.0.0.0/8", "10.0.0.0/8", AF_INET, 8},
        Case{"192.168.1.5", "192.168.1.5/32", AF_INET, 32},
        Case{"0.0.0.0/0", "0.0.0.0/0", AF_INET, 0}, Case{"::1/128", "::1/128", AF_INET6, 128},
        Case{"::1", "::1/128", AF_INET6, 128}, Case{"[::1]/128", "::1/128", AF_INET6, 128},
        Case{"2001:db8::/32", "2001:db8::/32", AF_INET6, 32}, Case{"::/0", "::/0", AF_INET6, 0}}) {
    auto r = Cidr::parse(c.text);
    ASSERT_TRUE(r) << c.text << ": " << r.error().message();
    EXPECT_EQ(r->to_string(), c.canonical) << c.text;
    EXPECT_EQ(r->family(), c.family) << c.text;
    EXPECT_EQ(r->prefix_length(), c.prefix) << c.text;
  }
}

TEST(Cidr, IgnoresHostBitsUnderThePrefix) {
  EXPECT_EQ(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
  EXPECT_EQ(cidr("192.168.1.77/25").to_string(), "192.168.1.0/25");
  EXPECT_EQ(cidr("2001:db8::1/64").to_string(), "2001:db8::/64");
  EXPECT_EQ(cidr("10.1.2.3/8"), cidr("10.0.0.0/8"));
}

TEST(Cidr, MappedIpv6RuleIsTheIpv4Rule) {
  auto mapped = cidr("::ffff:10.0.0.0/104");
  EXPECT_EQ(mapped.family(), AF_INET);
  EXPECT_EQ(mapped.prefix_length(), 8);
  EXPECT_EQ(mapped, cidr("10.0.0.0/8"));
}

TEST(Cidr, RejectsBadTextWithErrorsThatNameIt) {
  struct Case {
    const char* text;
    Errc code;
  };
  for (auto c : {Case{"", Errc::bad_address}, Case{"/8", Errc::bad_address},
                 Case{"10.0.0/8", Errc::bad_address}, Case{"10.0.0.256", Errc::bad_address},
                 Case{"localhost/8", Errc::bad_address}, Case{"10.0.0.0/8/8", Errc::bad_address},
                 Case{" 10.0.0.0/8", Errc::bad_address}, Case{"fe80::1%lo/64", Errc::bad_address},
                 Case{"10.0.0.0/", Errc::bad_prefix}, Case{"10.0.0.0/33", Errc::bad_prefix},
                 Case{"10.0.0.0/-1", Errc::bad_prefix}, Case{"10.0.0.0/+8", Errc::bad_prefix},
                 Case{"10.0.0.0/8x", Errc::bad_prefix}, Case{"::1/129", Errc::bad_prefix},
                 Case{"10.0.0.0/99999999999999999999", Errc::bad_prefix}}) {
    auto r = Cidr::parse(c.text);
    ASSERT_FALSE(r) << "'" << c.text << "' parsed as " << r->to_string();
    EXPECT_EQ(r.error().code(), tcpkit::make_error_code(c.code))
        << c.text << ": " << r.error().message();
    EXPECT_NE(r.error().message().find("'" + std::string(c.text) + "'"), std::string::npos)
        << r.error().message();
  }
}

// Regression: from_chars() read "/-0" as /0, so `serve --allow 10.0.0.0/-0`
// started and allowed everyone.
TEST(Cidr, RejectsSignedPrefixes) {
  for (const char* text : {"10.0.0.0/-0", "::/-0", "10.0.0.0/- 8", "10.0.0.0/ 8", "10.0.0.0/0x8"}) {
    auto r = Cidr::parse(text);
    ASSERT_FALSE(r) << "'" << text << "' parsed as " << r->to_string();
    EXPECT_EQ(r.error().code(), tcpkit::make_error_code(Errc::bad_prefix)) << text;
  }
}

TEST(Cidr, MatchesPeersInsideTheNetworkOnly) {
  auto net = cidr("10.0.0.0/8");
  EXPECT_TRUE(net.contains(peer("10.0.0.1")));
  EXPECT_TRUE(net.contains(peer("10.255.255.255")));
  EXPECT_FALSE(net.contains(peer("11.0.0.1")));
  EXPECT_FALSE(net.contains(peer("9.255.255.255")));

  auto odd = cidr("192.168.1.128/25");
  EXPECT_TRUE(odd.contains(peer("192.168.1.200")));
  EXPECT_FALSE(odd.contains(peer("192.168.1.127")));

  auto host = cidr("127.0.0.1");
  EXPECT_TRUE(host.contains(peer("127.0.0.1")));
  EXPECT_FALSE(host.contains(peer("127.0.0.2")));

  auto v6 = cidr("2001:db8::/32");
  EXPECT_TRUE(v6.contains(peer("2001:db8:1::5")));
  EXPECT_FALSE(v6.contains(peer("2001:db9::5")));
  EXPECT_FALSE(v6.contains(peer("10.0.0.1")));
  EXPECT_TRUE(cidr("::1").contains(peer("::1")));
  EXPECT_FALSE(cidr("::1").contains(peer("127.0.0.1")));
}

TEST(Cidr, Ipv4MappedPeersMatchIpv4Rules) {
  // What a dual-stack (::) listener reports for an IPv4 client.
  EXPECT_TRUE(cidr("127.0.0.0/8").contains(peer("::ffff:127.0.0.2")));
  EXPECT_FALSE(cidr("127.0.0.1").contains(peer("::ffff:127.0.0.2")));
  EXPECT_TRUE(cidr("::ffff:10.0.0.0/104").contains(peer("10.9.9.9")));
}

TEST(Cidr, ZeroPrefixMatchesItsWholeFamily) {
  EXPECT_TRUE(cidr("0.0.0.0/0").contains(peer("203.0.113.9")));
  EXPECT_FALSE(cidr("0.0.0.0/0").contains(peer("2001:db8::1")));
  // ::/0 is every 128-bit address, the mapped IPv4 ones included.
  EXPECT_TRUE(cidr("::/0").contains(peer("2001:db8::1")));
  EXPECT_TRUE(cidr("::/0").contains(peer("203.0.113.9")));
}

TEST(AccessList, EmptyListPermitsEveryone) {
  AccessList list;
  EXPECT_TRUE(list.empty());
  EXPECT_TRUE(list.permits(peer("127.0.0.1")));
  EXPECT_TRUE(list.permits(peer("::1")));
}

TEST(AccessList, AnyAllowRuleRefusesPeersItDoesNotMatch) {
  AccessList list;
  list.allow(cidr("127.0.0.1"));
  list.allow(cidr("10.0.0.0/8"));
  EXPECT_FALSE(list.empty());
  EXPECT_TRUE(list.permits(peer("127.0.0.1")));
  EXPECT_TRUE(list.permits(peer("10.2.3.4")));
  EXPECT_FALSE(list.permits(peer("127.0.0.2")));
  EXPECT_FALSE(list.permits(peer("::1")));
}

TEST(AccessList, DenyAloneRefusesOnlyItsMatches) {
  AccessList list;
  list.deny(cidr("127.0.0.2"));
  EXPECT_FALSE(list.permits(peer("127.0.0.2")));
  EXPECT_FALSE(list.permits(peer("::ffff:127.0.0.2")));
  EXPECT_TRUE(list.permits(peer("127.0.0.1")));
}

TEST(AccessList, DenyWinsOverAllow) {
  AccessList list;
  list.allow(cidr("127.0.0.0/8"));
  list.deny(cidr("127.0.0.66"));
  EXPECT_TRUE(list.permits(peer("127.0.0.1")));
  EXPECT_FALSE(list.permits(peer("127.0.0.66")));
  EXPECT_FALSE(list.permits(peer("192.0.2.1")));
  // The order the rules were added in does not matter.
  AccessList reversed;
  reversed.deny(cidr("127.0.0.66"));
  reversed.allow(cidr("127.0.0.66"));
  EXPECT_FALSE(reversed.permits(peer("127.0.0.66")));
}

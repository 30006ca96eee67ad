#include "tcpkit/proxy_protocol.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using tcpkit::encode_proxy_v1;
using tcpkit::encode_proxy_v1_unknown;
using tcpkit::encode_proxy_v2;
using tcpkit::encode_proxy_v2_local;
using tcpkit::Endpoint;
using tcpkit::parse_proxy_header;
using tcpkit::ProxyParseResult;
using tcpkit::ProxyParseStatus;
using tcpkit::ProxyTlv;

namespace {

Endpoint ep(const char* text) {
  auto r = Endpoint::parse(text);
  EXPECT_TRUE(r) << text;
  return r ? *r : Endpoint();
}

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out += static_cast<char>(v);
  return out;
}

// The v2 fixed part: signature, version/command, family, length.
std::string v2_prefix(int version_command, int family, int length) {
  return std::string(tcpkit::kProxyV2Signature) +
         bytes({version_command, family, length >> 8, length & 0xff});
}

ProxyParseResult expect_done(std::string_view data, size_t consumed) {
  auto r = parse_proxy_header(data);
  EXPECT_EQ(r.status, ProxyParseStatus::done) << r.reason;
  EXPECT_EQ(r.consumed, consumed);
  return r;
}

void expect_invalid(std::string_view data, std::string_view reason_part) {
  auto r = parse_proxy_header(data);
  EXPECT_EQ(r.status, ProxyParseStatus::invalid) << "consumed " << r.consumed;
  EXPECT_NE(r.reason.find(reason_part), std::string::npos) << r.reason;
}

// Feeds `header` + `tail` the way a socket may deliver it: every proper
// prefix of the header must ask for more, and the whole must parse to the
// same result wherever it was split.
void expect_need_more_until_complete(const std::string& header, const std::string& tail = "tail") {
  for (size_t cut = 0; cut < header.size(); ++cut) {
    auto r = parse_proxy_header(std::string_view(header).substr(0, cut));
    ASSERT_EQ(r.status, ProxyParseStatus::need_more) << "cut at " << cut << ": " << r.reason;
  }
  std::string whole = header + tail;
  auto r = parse_proxy_header(whole);
  ASSERT_EQ(r.status, ProxyParseStatus::done) << r.reason;
  EXPECT_EQ(r.consumed, header.size());
  EXPECT_EQ(whole.substr(r.consumed), tail);
}

}  // namespace

// ---------------------------------------------------------------- v1

TEST(ProxyV1, ParsesTcp4) {
  std::string line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  auto r = expect_done(line + "GET /", line.size());
  EXPECT_EQ(r.header.version, 1);
  EXPECT_FALSE(r.header.local);
  ASSERT_TRUE(r.header.source);
  ASSERT_TRUE(r.header.destination);
  EXPECT_EQ(r.header.source->to_string(), "192.168.0.1:56324");
  EXPECT_EQ(r.header.destination->to_string(), "192.168.0.11:443");
}

// Regression: inet_pton() stopped at an embedded NUL, so "10.0.0.1\0junk"
// was read as 10.0.0.1.
TEST(ProxyV1, RejectsAnAddressWithAnEmbeddedNul) {
  using namespace std::string_literals;
  expect_invalid("PROXY TCP4 10.0.0.1\0junk 127.0.0.1 5 6\r\n"s, "bad source address");
  expect_invalid("PROXY TCP4 10.0.0.1 127.0.0.1\0 5 6\r\n"s, "bad destination address");
  expect_invalid("PROXY TCP6 ::1\0 ::1 5 6\r\n"s, "bad source address");
}

TEST(ProxyV1, ParsesTcp6) {
  std::string line = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
  auto r = expect_done(line, line.size());
  ASSERT_TRUE(r.header.source);
  EXPECT_EQ(r.header.source->to_string(), "[2001:db8::1]:65535");
  EXPECT_EQ(r.header.destination->to_string(), "[::1]:0");
}

TEST(ProxyV1, UnknownCarriesNoAddressesAndIgnoresTheRest) {
  auto r = expect_done("PROXY UNKNOWN\r\nhello", 15);
  EXPECT_FALSE(r.header.source);
  EXPECT_FALSE(r.header.destination);
  EXPECT_FALSE(r.header.local);
  std::string with_rest = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
  auto r2 = expect_done(with_rest, with_rest.size());
  EXPECT_FALSE(r2.header.source);
}

TEST(ProxyV1, SplitAtEveryByteBoundary) {
  expect_need_more_until_complete("PROXY TCP4 10.1.2.3 10.0.0.1 40000 8888\r\n");
  expect_need_more_until_complete("PROXY TCP6 fe80::1 2001:db8::2 1 2\r\n");
  expect_need_more_until_complete(encode_proxy_v1_unknown());
}

TEST(ProxyV1, LinesUpTo107BytesParse) {
  std::string longest =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "65535 65535\r\n";
  // The longest TCP line (104 bytes) fits with room to spare.
  ASSERT_LE(longest.size(), tcpkit::kProxyV1MaxLength);
  expect_done(longest, longest.size());
  // UNKNOWN padded to 107 still fits; one more byte without a CRLF does not.
  std::string padded = "PROXY UNKNOWN " + std::string(107 - 16, 'x') + "\r\n";
  ASSERT_EQ(padded.size(), 107u);
  expect_done(padded, 107);
  std::string too_long = "PROXY UNKNOWN " + std::string(107 - 15, 'x') + "\r\n";
  expect_invalid(too_long, "107");
}

TEST(ProxyV1, RejectsBadPorts) {
  expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n", "bad source port");
  expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 80 -1\r\n", "bad destination port");
  expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n", "bad source port");
  expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 8o 80\r\n", "bad source port");
  expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 123456 80\r\n", "bad source port");
}

TEST(ProxyV1, RejectsBadAddresses) {
  expect_invalid("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad source address");
  expect_invalid("PROXY TCP4 1.2.3.4 01.2.3.4 1 2\r\n", "bad destination address");
  expect_invalid("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad source address");
  expect_invalid("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad source address");
  expect_invalid("PROXY TCP6 [::1] ::1 1 2\r\n", "bad source address");
  expect_invalid("PROXY TCP6 fe80::1%lo ::1 1 2\r\n", "bad source address");
  expect_invalid("PROXY TCP4 localhost 5.6.7.8 1 2\r\n", "bad source address");
}

TEST(ProxyV1, RejectsMalformedLines) {
  expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "expected");
  expect_invalid("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "expected");
  expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "expected");
  expect_invalid("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol");
  expect_invalid("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol");
  expect_invalid("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF");
  expect_invalid("PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CR");
  expect_invalid("PROXY \r\n", "unknown protocol");
}

TEST(ProxyV1, RejectsWhatIsNotAHeaderAtTheFirstWrongByte) {
  expect_invalid("GET / HTTP/1.1\r\n", "not a PROXY header");
  expect_invalid("PROXZ", "not a PROXY header");
  expect_invalid("proxy TCP4", "not a PROXY header");
  expect_invalid("x", "not a PROXY header");
  // A plausible prefix waits; nothing is decided on guesses.
  EXPECT_EQ(parse_proxy_header("PRO").status, ProxyParseStatus::need_more);
  EXPECT_EQ(parse_proxy_header("").status, ProxyParseStatus::need_more);
}

TEST(ProxyV1, TruncatedLineWaitsThenGivesUpAt107Bytes) {
  std::string partial = "PROXY TCP4 1.2.3.4 5.6.7.8 1000";
  EXPECT_EQ(parse_proxy_header(partial).status, ProxyParseStatus::need_more);
  std::string endless = "PROXY UNKNOWN " + std::string(200, 'x');
  // 106 bytes without a line end: still a possible line.
  EXPECT_EQ(parse_proxy_header(endless.substr(0, 106)).status, ProxyParseStatus::need_more);
  expect_invalid(endless.substr(0, 107), "107");
}

TEST(ProxyV1, EncoderRoundTrips) {
  auto line = encode_proxy_v1(ep("127.0.0.5:40000"), ep("127.0.0.1:8888"));
  EXPECT_EQ(line, "PROXY TCP4 127.0.0.5 127.0.0.1 40000 8888\r\n");
  auto r = expect_done(line, line.size());
  EXPECT_EQ(r.header.source, ep("127.0.0.5:40000"));
  EXPECT_EQ(r.header.destination, ep("127.0.0.1:8888"));
  auto line6 = encode_proxy_v1(ep("[2001:db8::7]:1"), ep("[::1]:2"));
  auto r6 = expect_done(line6, line6.size());
  EXPECT_EQ(r6.header.source, ep("[2001:db8::7]:1"));
  // An IPv6 zone, which Endpoint::host() writes, has no place in a v1 line.
  auto zoned = encode_proxy_v1(ep("[fe80::7%lo]:1"), ep("[fe80::1%lo]:2"));
  EXPECT_EQ(zoned, "PROXY TCP6 fe80::7 fe80::1 1 2\r\n");
  EXPECT_EQ(expect_done(zoned, zoned.size()).header.source, ep("[fe80::7]:1"));
}

// ---------------------------------------------------------------- v2

TEST(ProxyV2, ParsesTcp4) {
  auto header = encode_proxy_v2(ep("192.168.0.1:56324"), ep("192.168.0.11:443"));
  ASSERT_EQ(header.size(), 16u + 12u);
  EXPECT_EQ(header.substr(12, 4), bytes({0x21, 0x11, 0x00, 0x0c}));
  auto r = expect_done(header + "payload", header.size());
  EXPECT_EQ(r.header.version, 2);
  EXPECT_FALSE(r.header.local);
  EXPECT_EQ(r.header.source, ep("192.168.0.1:56324"));
  EXPECT_EQ(r.header.destination, ep("192.168.0.11:443"));
  EXPECT_TRUE(r.header.tlvs.empty());
}

TEST(ProxyV2, ParsesHandWrittenTcp4) {
  // The bytes HAProxy sends for 172.19.0.1:42578 -> 172.19.0.3:80.
  std::string header = v2_prefix(0x21, 0x11, 12) + bytes({0xac, 0x13, 0x00, 0x01, 0xac, 0x13, 0x00,
                                                          0x03, 0xa6, 0x52, 0x00, 0x50});
  auto r = expect_done(header, 28);
  EXPECT_EQ(r.header.source, ep("172.19.0.1:42578"));
  EXPECT_EQ(r.header.destination, ep("172.19.0.3:80"));
}

TEST(ProxyV2, ParsesTcp6) {
  auto header = encode_proxy_v2(ep("[2001:db8::1]:1234"), ep("[::1]:80"));
  ASSERT_EQ(header.size(), 16u + 36u);
  auto r = expect_done(header, header.size());
  EXPECT_EQ(r.header.source, ep("[2001:db8::1]:1234"));
  EXPECT_EQ(r.header.destination, ep("[::1]:80"));
}

TEST(ProxyV2, TlvsAreSkippedAndHeaderMayExceed107Bytes) {
  std::vector<ProxyTlv> tlvs{{0x01, "h2"},
                             {0x02, "example.net"},
                             {0x04, std::string(300, '\0')},
                             {0x05, "unique-id-42"},
                             {0x20, std::string(5, '\x01')}};
  auto header = encode_proxy_v2(ep("10.0.0.9:5000"), ep("10.0.0.1:443"), tlvs);
  ASSERT_GT(header.size(), tcpkit::kProxyV1MaxLength);
  auto r = expect_done(header + "after", header.size());
  EXPECT_EQ(r.header.source, ep("10.0.0.9:5000"));
  EXPECT_EQ(r.header.tlvs, tlvs);
  expect_need_more_until_complete(header);
}

TEST(ProxyV2, LargestHeaderParses) {
  // One NOOP TLV filling the whole 16-bit length.
  std::string value(65535 - 12 - 3, 'n');
  auto header = encode_proxy_v2(ep("1.1.1.1:1"), ep("2.2.2.2:2"), {{0x04, value}});
  ASSERT_EQ(header.size(), tcpkit::kProxyV2MaxLength);
  auto r = expect_done(header + "x", header.size());
  ASSERT_EQ(r.header.tlvs.size(), 1u);
  EXPECT_EQ(r.header.tlvs[0].value.size(), value.size());
  EXPECT_EQ(parse_proxy_header(std::string_view(header).substr(0, header.size() - 1)).status,
            ProxyParseStatus::need_more);
}

TEST(ProxyV2, SplitAtEveryByteBoundary) {
  expect_need_more_until_complete(encode_proxy_v2(ep("127.0.0.5:1"), ep("127.0.0.1:2")));
  expect_need_more_until_complete(encode_proxy_v2(ep("[::5]:1"), ep("[::1]:2"), {{0x02, "sni"}}));
  expect_need_more_until_complete(encode_proxy_v2_local());
}

TEST(ProxyV2, LocalUsesTheConnectionsOwnAddresses) {
  auto header = encode_proxy_v2_local();
  EXPECT_EQ(header.substr(12), bytes({0x20, 0x00, 0x00, 0x00}));
  auto r = expect_done(header + "ping", 16);
  EXPECT_TRUE(r.header.local);
  EXPECT_FALSE(r.header.source);
  EXPECT_FALSE(r.header.destination);
}

TEST(ProxyV2, LocalDiscardsWhateverItsBlockHolds) {
  // LOCAL with a TCP4 family and addresses: the spec says to ignore them,
  // and any family byte (even one PROXY would refuse) is fine.
  std::string header = v2_prefix(0x20, 0x11, 12) + std::string(12, '\x07');
  auto r = expect_done(header, 28);
  EXPECT_TRUE(r.header.local);
  EXPECT_FALSE(r.header.source);
  std::string odd = v2_prefix(0x20, 0x99, 3) + "abc";
  EXPECT_TRUE(expect_done(odd, 19).header.local);
}

TEST(ProxyV2, UnspecAndUnixGiveNoEndpoint) {
  auto unspec = expect_done(v2_prefix(0x21, 0x00, 0), 16);
  EXPECT_FALSE(unspec.header.local);
  EXPECT_FALSE(unspec.header.source);
  std::string unix_header = v2_prefix(0x21, 0x31, 216) + std::string(216, '\0');
  auto unix_stream = expect_done(unix_header, 232);
  EXPECT_FALSE(unix_stream.header.source);
  EXPECT_FALSE(unix_stream.header.destination);
  // UNSPEC may still carry TLVs after its empty address block.
  auto with_tlv = expect_done(v2_prefix(0x21, 0x00, 5) + bytes({0x01, 0x00, 0x02, 'h', '2'}), 21);
  ASSERT_EQ(with_tlv.header.tlvs.size(), 1u);
  EXPECT_EQ(with_tlv.header.tlvs[0].value, "h2");
}

TEST(ProxyV2, RejectsWrongSignatureAtTheFirstWrongByte) {
  std::string header = encode_proxy_v2(ep("1.2.3.4:5"), ep("6.7.8.9:10"));
  for (size_t i = 0; i < 12; ++i) {
    std::string broken = header.substr(0, i + 1);
    broken[i] = static_cast<char>(broken[i] ^ 0x40);
    auto r = parse_proxy_header(broken);
    EXPECT_EQ(r.status, ProxyParseStatus::invalid) << "byte " << i;
  }
  expect_invalid("\r\n\r\n\x01", "signature");
}

TEST(ProxyV2, RejectsBadVersionCommandAndFamily) {
  expect_invalid(v2_prefix(0x11, 0x11, 12).substr(0, 13), "version");
  expect_invalid(v2_prefix(0x31, 0x11, 12).substr(0, 13), "version");
  expect_invalid(v2_prefix(0x22, 0x11, 12).substr(0, 13), "command");
  expect_invalid(v2_prefix(0x21, 0x12, 12).substr(0, 14), "family");  // UDP over IPv4
  expect_invalid(v2_prefix(0x21, 0x41, 12).substr(0, 14), "family");
  expect_invalid(v2_prefix(0x21, 0x13, 12).substr(0, 14), "family");
}

TEST(ProxyV2, RejectsLengthTooShortForTheFamily) {
  expect_invalid(v2_prefix(0x21, 0x11, 11) + std::string(11, '\0'), "too short");
  expect_invalid(v2_prefix(0x21, 0x21, 12) + std::string(12, '\0'), "too short");
  expect_invalid(v2_prefix(0x21, 0x31, 215), "too short");
}

TEST(ProxyV2, RejectsTlvThatRunsPastTheHeader) {
  std::string addresses(12, '\x01');
  // A TLV claiming 10 bytes where 2 remain.
  expect_invalid(v2_prefix(0x21, 0x11, 12 + 5) + addresses + bytes({0x02, 0x00, 0x0a, 'a', 'b'}),
                 "TLV");
  // A dangling TLV header fragment.
  expect_invalid(v2_prefix(0x21, 0x11, 12 + 2) + addresses + bytes({0x02, 0x00}), "TLV");
}

TEST(ProxyV2, TruncatedHeaderWaits) {
  auto header = encode_proxy_v2(ep("1.2.3.4:5"), ep("6.7.8.9:10"), {{0x05, std::string(200, 'u')}});
  for (size_t cut :
       {size_t{1}, size_t{12}, size_t{15}, size_t{16}, size_t{27}, header.size() - 1}) {
    EXPECT_EQ(parse_proxy_header(std::string_view(header).substr(0, cut)).status,
              ProxyParseStatus::need_more)
        << "cut " << cut;
  }
}

TEST(ProxyV2, ConsumesOnlyTheHeaderEvenWhenTheClientSendsALookalike) {
  // The client's first bytes after the header look like another header;
  // they are data, not a second header.
  auto header = encode_proxy_v2(ep("1.2.3.4:5"), ep("6.7.8.9:10"));
  auto r = expect_done(header + encode_proxy_v1(ep("9.9.9.9:9"), ep("8.8.8.8:8")), header.size());
  EXPECT_EQ(r.header.source, ep("1.2.3.4:5"));
}

namespace {

TEST(Crc32c, KnownValues) {
  // The check value of CRC-32C (Castagnoli) and RFC 3720's test patterns.
  EXPECT_EQ(tcpkit::crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(tcpkit::crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(tcpkit::crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  EXPECT_EQ(tcpkit::crc32c(""), 0u);
}

// A CRC32C TLV (type 0x03) carries the checksum of the whole header with
// its own four bytes zeroed; the encoder fills it in, the parser checks it.
TEST(ProxyV2, Crc32cIsFilledInAndVerified) {
  const std::vector<ProxyTlv> tlvs{{0x05, "unique-id"}, {0x03, std::string(4, '\0')}, {0x01, "h2"}};
  auto header = encode_proxy_v2(ep("[2001:db8::1]:5000"), ep("[2001:db8::2]:443"), tlvs);
  auto r = expect_done(header + "data", header.size());
  EXPECT_EQ(r.header.source, ep("[2001:db8::1]:5000"));
  ASSERT_EQ(r.header.tlvs.size(), 3u);
  EXPECT_NE(r.header.tlvs[1].value, std::string(4, '\0'));
  // The checksum is what the spec says: recompute it with the field zeroed.
  std::string zeroed = header;
  const size_t at = header.size() - (3 + 2) - 4;  // the CRC value sits before the last TLV
  zeroed.replace(at, 4, 4, '\0');
  const uint32_t crc = tcpkit::crc32c(zeroed);
  EXPECT_EQ(r.header.tlvs[1].value,
            bytes({static_cast<int>(crc >> 24), static_cast<int>((crc >> 16) & 0xff),
                   static_cast<int>((crc >> 8) & 0xff), static_cast<int>(crc & 0xff)}));
}

TEST(ProxyV2, Crc32cMismatchIsRefused) {
  auto header = encode_proxy_v2(ep("1.2.3.4:5"), ep("6.7.8.9:10"), {{0x03, std::string(4, '\0')}});
  ASSERT_EQ(parse_proxy_header(header).status, ProxyParseStatus::done);
  // One changed bit anywhere, the source address or the checksum itself.
  for (size_t at : {size_t{16}, header.size() - 1}) {
    std::string bad = header;
    bad[at] = static_cast<char>(bad[at] ^ 0x01);
    expect_invalid(bad, "CRC32C does not match");
  }
}

TEST(ProxyV2, Crc32cOfTheWrongSizeIsRefused) {
  std::string addresses(12, '\x01');
  expect_invalid(v2_prefix(0x21, 0x11, 12 + 5) + addresses + bytes({0x03, 0x00, 0x02, 'a', 'b'}),
                 "not 4 bytes");
}

}  // namespace

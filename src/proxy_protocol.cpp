#include "tcpkit/proxy_protocol.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <cstring>

namespace tcpkit {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";

// v2 byte 13: version in the high nibble, command in the low one.
constexpr uint8_t kV2Version = 0x2;
constexpr uint8_t kV2CommandLocal = 0x0;
constexpr uint8_t kV2CommandProxy = 0x1;
// v2 byte 14: address family (high nibble) and transport (low nibble).
constexpr uint8_t kV2Unspec = 0x00;
constexpr uint8_t kV2Tcp4 = 0x11;
constexpr uint8_t kV2Tcp6 = 0x21;
constexpr uint8_t kV2UnixStream = 0x31;
// Address block sizes: two addresses plus two ports (none for UNIX).
constexpr size_t kV2Inet4Size = 4 + 4 + 2 + 2;
constexpr size_t kV2Inet6Size = 16 + 16 + 2 + 2;
constexpr size_t kV2UnixSize = 108 + 108;
constexpr size_t kV2TlvHeaderSize = 3;
constexpr uint8_t kV2TypeCrc32c = 0x03;  // PP2_TYPE_CRC32C: 4 bytes, big-endian

ProxyParseResult invalid(std::string reason) {
  ProxyParseResult r;
  r.status = ProxyParseStatus::invalid;
  r.reason = std::move(reason);
  return r;
}

ProxyParseResult need_more() {
  return {};
}

// The bytes as they may be shown in a log line: printable ASCII only, and
// short, because they come from whoever connected.
std::string shown(std::string_view text) {
  constexpr size_t kMaxShown = 48;
  std::string out;
  for (unsigned char c : text.substr(0, kMaxShown)) {
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (text.size() > kMaxShown) out += "...";
  return out;
}

uint16_t be16(const char* p) {
  return static_cast<uint16_t>((static_cast<unsigned char>(p[0]) << 8) |
                               static_cast<unsigned char>(p[1]));
}

void append_be16(std::string& out, uint16_t value) {
  out += static_cast<char>(value >> 8);
  out += static_cast<char>(value & 0xff);
}

// Whether `data` (maybe short) agrees with `prefix` as far as both go.
bool agrees_with(std::string_view data, std::string_view prefix) {
  size_t n = std::min(data.size(), prefix.size());
  return data.substr(0, n) == prefix.substr(0, n);
}

// ---------------------------------------------------------------- v1

// The spec's port: decimal 0..65535 without leading zeroes, so that "080"
// cannot be read as octal by one peer and decimal by another.
std::optional<uint16_t> parse_v1_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  if (text.size() > 1 && text[0] == '0') return std::nullopt;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

// inet_pton() is strict where the spec is: dotted quads without leading
// zeroes, IPv6 without a scope or brackets.
std::optional<Endpoint> make_v1_endpoint(int family, std::string_view host, uint16_t port) {
  // inet_pton() reads a C string: "10.0.0.1\0junk" would stop at the NUL and
  // pass as 10.0.0.1. An address is hex digits, dots and colons only.
  const bool address_chars = std::all_of(host.begin(), host.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) != 0 || c == '.' || c == ':';
  });
  if (!address_chars) return std::nullopt;
  std::string text(host);
  if (family == AF_INET) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    if (::inet_pton(AF_INET, text.c_str(), &sin.sin_addr) != 1) return std::nullopt;
    return Endpoint(reinterpret_cast<const sockaddr*>(&sin), sizeof(sin));
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  if (::inet_pton(AF_INET6, text.c_str(), &sin6.sin6_addr) != 1) return std::nullopt;
  return Endpoint(reinterpret_cast<const sockaddr*>(&sin6), sizeof(sin6));
}

std::vector<std::string_view> split_spaces(std::string_view line) {
  std::vector<std::string_view> fields;
  for (;;) {
    size_t space = line.find(' ');
    fields.push_back(line.substr(0, space));
    if (space == std::string_view::npos) return fields;
    line.remove_prefix(space + 1);
  }
}

// `line` is what lies between "PROXY " and "\r\n".
ProxyParseResult parse_v1_line(std::string_view line, size_t consumed) {
  ProxyParseResult r;
  r.status = ProxyParseStatus::done;
  r.consumed = consumed;
  r.header.version = 1;
  auto fields = split_spaces(line);
  // UNKNOWN: the proxy could not tell; whatever follows it is to be ignored.
  if (fields[0] == "UNKNOWN") return r;
  int family = 0;
  if (fields[0] == "TCP4") {
    family = AF_INET;
  } else if (fields[0] == "TCP6") {
    family = AF_INET6;
  } else {
    return invalid("v1: unknown protocol '" + shown(fields[0]) + "'");
  }
  // Exactly one space between fields: an empty field means two in a row.
  if (fields.size() != 5) return invalid("v1: expected 'PROXY TCPn SRC DST SPORT DPORT'");
  auto source_port = parse_v1_port(fields[3]);
  if (!source_port) return invalid("v1: bad source port '" + shown(fields[3]) + "'");
  auto destination_port = parse_v1_port(fields[4]);
  if (!destination_port) return invalid("v1: bad destination port '" + shown(fields[4]) + "'");
  r.header.source = make_v1_endpoint(family, fields[1], *source_port);
  if (!r.header.source) return invalid("v1: bad source address '" + shown(fields[1]) + "'");
  r.header.destination = make_v1_endpoint(family, fields[2], *destination_port);
  if (!r.header.destination)
    return invalid("v1: bad destination address '" + shown(fields[2]) + "'");
  return r;
}

ProxyParseResult parse_v1(std::string_view data) {
  if (!agrees_with(data, kV1Prefix)) return invalid("not a PROXY header: '" + shown(data) + "'");
  size_t end = data.substr(0, kProxyV1MaxLength).find('\n');
  if (end == std::string_view::npos) {
    if (data.size() >= kProxyV1MaxLength) return invalid("v1: no CRLF within 107 bytes");
    return need_more();
  }
  if (end < kV1Prefix.size() + 1 || data[end - 1] != '\r')
    return invalid("v1: line does not end in CRLF");
  std::string_view line = data.substr(kV1Prefix.size(), end - 1 - kV1Prefix.size());
  if (line.find('\r') != std::string_view::npos) return invalid("v1: stray CR in the line");
  return parse_v1_line(line, end + 1);
}

// ---------------------------------------------------------------- v2

Endpoint make_v2_endpoint4(const char* addr, const char* port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  std::memcpy(&sin.sin_addr, addr, 4);
  std::memcpy(&sin.sin_port, port, 2);  // both in network order already
  return Endpoint(reinterpret_cast<const sockaddr*>(&sin), sizeof(sin));
}

Endpoint make_v2_endpoint6(const char* addr, const char* port) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  std::memcpy(&sin6.sin6_addr, addr, 16);
  std::memcpy(&sin6.sin6_port, port, 2);
  return Endpoint(reinterpret_cast<const sockaddr*>(&sin6), sizeof(sin6));
}

// The address block size for a PROXY command's family byte, or nullopt for
// a family/transport this TCP receiver does not accept (datagram transports
// and values the spec leaves undefined).
std::optional<size_t> v2_address_size(uint8_t family) {
  switch (family) {
    case kV2Unspec:
      return 0;
    case kV2Tcp4:
      return kV2Inet4Size;
    case kV2Tcp6:
      return kV2Inet6Size;
    case kV2UnixStream:
      return kV2UnixSize;
    default:
      return std::nullopt;
  }
}

// Walks the TLVs that fill the rest of the header. Each must fit inside the
// header's length; a TLV that claims more is a broken or hostile header.
bool parse_v2_tlvs(std::string_view block, std::vector<ProxyTlv>* tlvs) {
  while (!block.empty()) {
    if (block.size() < kV2TlvHeaderSize) return false;
    size_t length = be16(block.data() + 1);
    if (block.size() - kV2TlvHeaderSize < length) return false;
    tlvs->push_back(
        {static_cast<uint8_t>(block[0]), std::string(block.substr(kV2TlvHeaderSize, length))});
    block.remove_prefix(kV2TlvHeaderSize + length);
  }
  return true;
}

// The sender may add a CRC32C of the whole header, computed with the
// checksum's own 4 bytes as zeros; when it is there, it must match.
// Returns what is wrong, or "" when the header is fine.
std::string check_v2_crc32c(std::string_view header, std::string_view tlv_block,
                            const std::vector<ProxyTlv>& tlvs) {
  auto it = std::find_if(tlvs.begin(), tlvs.end(),
                         [](const ProxyTlv& t) { return t.type == kV2TypeCrc32c; });
  if (it == tlvs.end()) return {};
  if (it->value.size() != 4) return "v2: CRC32C TLV is not 4 bytes";
  // Where that TLV's value sits in the header: walk the block again.
  size_t offset = header.size() - tlv_block.size();
  for (const ProxyTlv& tlv : tlvs) {
    if (&tlv == &*it) break;
    offset += kV2TlvHeaderSize + tlv.value.size();
  }
  offset += kV2TlvHeaderSize;
  std::string zeroed(header);
  const uint32_t sent = (static_cast<uint32_t>(be16(zeroed.data() + offset)) << 16) |
                        be16(zeroed.data() + offset + 2);
  zeroed.replace(offset, 4, 4, '\0');
  if (crc32c(zeroed) != sent) return "v2: CRC32C does not match the header";
  return {};
}

ProxyParseResult parse_v2(std::string_view data) {
  if (!agrees_with(data, kProxyV2Signature)) return invalid("v2: bad signature");
  // Check the version, command and family as soon as they arrive, so that
  // garbage is refused before waiting for a length's worth of bytes.
  if (data.size() <= 12) return need_more();
  auto version_command = static_cast<uint8_t>(data[12]);
  if ((version_command >> 4) != kV2Version) return invalid("v2: unsupported version");
  uint8_t command = version_command & 0x0f;
  if (command != kV2CommandLocal && command != kV2CommandProxy)
    return invalid("v2: unknown command");
  if (data.size() <= 13) return need_more();
  auto family = static_cast<uint8_t>(data[13]);
  // LOCAL ignores the family, as the spec says; PROXY needs one we know.
  auto address_size =
      command == kV2CommandLocal ? std::optional<size_t>(0) : v2_address_size(family);
  if (!address_size) return invalid("v2: unsupported address family/protocol");
  if (data.size() < kProxyV2FixedLength) return need_more();
  size_t length = be16(data.data() + 14);
  if (command == kV2CommandProxy && length < *address_size)
    return invalid("v2: length too short for the addresses");
  if (data.size() < kProxyV2FixedLength + length) return need_more();

  ProxyParseResult r;
  r.status = ProxyParseStatus::done;
  r.consumed = kProxyV2FixedLength + length;
  r.header.version = 2;
  if (command == kV2CommandLocal) {
    // Health checks: the addresses (if any) and TLVs are to be discarded.
    r.header.local = true;
    return r;
  }
  const char* body = data.data() + kProxyV2FixedLength;
  if (family == kV2Tcp4) {
    r.header.source = make_v2_endpoint4(body, body + 8);
    r.header.destination = make_v2_endpoint4(body + 4, body + 10);
  } else if (family == kV2Tcp6) {
    r.header.source = make_v2_endpoint6(body, body + 32);
    r.header.destination = make_v2_endpoint6(body + 16, body + 34);
  }
  std::string_view tlv_block(body + *address_size, length - *address_size);
  if (!parse_v2_tlvs(tlv_block, &r.header.tlvs)) return invalid("v2: TLV runs past the header");
  if (auto why = check_v2_crc32c(data.substr(0, r.consumed), tlv_block, r.header.tlvs);
      !why.empty()) {
    return invalid(std::move(why));
  }
  return r;
}

void append_v2_address(std::string& out, const Endpoint& ep) {
  if (ep.is_v6()) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ep.sockaddr_ptr());
    out.append(reinterpret_cast<const char*>(&sin6->sin6_addr), 16);
  } else {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(ep.sockaddr_ptr());
    out.append(reinterpret_cast<const char*>(&sin->sin_addr), 4);
  }
}

}  // namespace

ProxyParseResult parse_proxy_header(std::string_view data) {
  if (data.empty()) return need_more();
  // The two versions differ in the first byte ('P' vs '\r'), so one byte
  // picks the parser and nothing is guessed.
  if (data[0] == kProxyV2Signature[0]) return parse_v2(data);
  return parse_v1(data);
}

std::string encode_proxy_v1(const Endpoint& source, const Endpoint& destination) {
  assert(source.family() == destination.family());
  // v1 addresses are plain inet_pton() text, with no room for an IPv6 zone
  // ("%eth0"), which host() adds: a receiver would refuse the line. The zone
  // names an interface of this host only, meaningless to the receiver.
  const auto address = [](const Endpoint& ep) {
    std::string host = ep.host();
    return host.substr(0, host.find('%'));
  };
  return "PROXY " + std::string(source.is_v6() ? "TCP6 " : "TCP4 ") + address(source) + " " +
         address(destination) + " " + std::to_string(source.port()) + " " +
         std::to_string(destination.port()) + "\r\n";
}

uint32_t crc32c(std::string_view data) {
  // Castagnoli's polynomial, bit-reversed; one table lookup per byte.
  static const auto kTable = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int bit = 0; bit < 8; ++bit) c = (c & 1) != 0 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) crc = kTable[(crc ^ byte) & 0xff] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

std::string encode_proxy_v1_unknown() {
  return "PROXY UNKNOWN\r\n";
}

std::string encode_proxy_v2(const Endpoint& source, const Endpoint& destination,
                            const std::vector<ProxyTlv>& tlvs) {
  assert(source.family() == destination.family());
  size_t length = source.is_v6() ? kV2Inet6Size : kV2Inet4Size;
  for (const auto& tlv : tlvs) {
    assert(tlv.value.size() <= 0xffff);
    length += kV2TlvHeaderSize + tlv.value.size();
  }
  assert(length <= 0xffff);
  std::string out(kProxyV2Signature);
  out += static_cast<char>((kV2Version << 4) | kV2CommandProxy);
  out += static_cast<char>(source.is_v6() ? kV2Tcp6 : kV2Tcp4);
  append_be16(out, static_cast<uint16_t>(length));
  append_v2_address(out, source);
  append_v2_address(out, destination);
  append_be16(out, source.port());
  append_be16(out, destination.port());
  size_t crc_at = 0;  // where a CRC32C TLV's value goes, if there is one
  for (const auto& tlv : tlvs) {
    out += static_cast<char>(tlv.type);
    append_be16(out, static_cast<uint16_t>(tlv.value.size()));
    if (tlv.type == kV2TypeCrc32c && tlv.value.size() == 4 && crc_at == 0) {
      crc_at = out.size();
      out.append(4, '\0');
    } else {
      out += tlv.value;
    }
  }
  if (crc_at != 0) {
    const uint32_t crc = crc32c(out);  // over the header with the field still zero
    for (int i = 0; i < 4; ++i) out[crc_at + i] = static_cast<char>(crc >> (24 - 8 * i));
  }
  return out;
}

std::string encode_proxy_v2_local() {
  std::string out(kProxyV2Signature);
  out += static_cast<char>((kV2Version << 4) | kV2CommandLocal);
  out += static_cast<char>(kV2Unspec);
  append_be16(out, 0);
  return out;
}

}  // namespace tcpkit

/// \file
/// PROXY protocol (HAProxy's doc/proxy-protocol.txt), receiving side: a
/// parser for the header a load balancer puts in front of the client's bytes
/// so that the server learns the real client address, plus encoders that
/// tests and tools use to play the balancer.
///
/// Plain functions over bytes, no state: call parse_proxy_header() with every
/// byte received so far each time more arrive, until it says done or invalid.
/// A header is small (a v1 line is at most 107 bytes, and a v2 header waits
/// for its 16 fixed bytes before the rest is looked at), so the rescans cost
/// little. Any thread.
///
/// What the parser does not do, on purpose: decide whether a header must be
/// present. The caller enables PROXY protocol per listener and accepts it only
/// from trusted proxies; a client that may send a header at will can claim
/// any address.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tcpkit/endpoint.h"

namespace tcpkit {

/// v1 is one line, "PROXY ... \r\n", of at most 107 bytes.
inline constexpr size_t kProxyV1MaxLength = 107;
/// v2 is 16 fixed bytes plus a 16-bit length; TLVs can take all of it, so a
/// v2 header may be far longer than a v1 line.
inline constexpr size_t kProxyV2FixedLength = 16;
inline constexpr size_t kProxyV2MaxLength = kProxyV2FixedLength + 65535;
/// The 12 bytes every v2 header starts with.
inline constexpr std::string_view kProxyV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};

/// One v2 Type-Length-Value extension (ALPN 0x01, AUTHORITY 0x02, ...).
struct ProxyTlv {
  uint8_t type = 0;
  std::string value;

  friend bool operator==(const ProxyTlv&, const ProxyTlv&) = default;
};

struct ProxyHeader {
  int version = 0;  ///< 1 or 2
  /// A v2 LOCAL header: the proxy speaks for itself (a health check), so the
  /// connection's own addresses are the real ones.
  bool local = false;
  /// The client and the address it connected to, when the header carries
  /// TCP over IPv4/IPv6. Empty for v1 UNKNOWN, v2 LOCAL, UNSPEC and UNIX
  /// families: the receiver then uses the connection's own addresses.
  std::optional<Endpoint> source;
  std::optional<Endpoint> destination;
  std::vector<ProxyTlv> tlvs;  ///< v2 PROXY only, in header order
};

enum class ProxyParseStatus {
  need_more,  ///< a valid prefix so far; wait for more bytes
  invalid,    ///< not a PROXY header, or a broken one: close the connection
  done,       ///< `consumed` bytes form a complete header
};

struct ProxyParseResult {
  ProxyParseStatus status = ProxyParseStatus::need_more;
  size_t consumed = 0;  ///< header length when done; the client's bytes follow
  ProxyHeader header;   ///< when done
  std::string reason;   ///< when invalid: what is wrong, e.g. "v1: bad source port '65536'"
};

/// The CRC32C (Castagnoli) of `data`. A v2 header may carry one in a TLV of
/// type 0x03: computed over the whole header with those 4 bytes as zeros.
uint32_t crc32c(std::string_view data);

/// Looks for a v1 or v2 header at the start of `data`. Never reads past the
/// header, and answers invalid as soon as the bytes seen can no longer begin
/// a valid header, so a client that is not a proxy is turned away early.
ProxyParseResult parse_proxy_header(std::string_view data);

/// The v1 line for a TCP connection from `source` to `destination` (both
/// IPv4 or both IPv6: asserted), e.g. "PROXY TCP4 1.2.3.4 5.6.7.8 1000 80\r\n".
std::string encode_proxy_v1(const Endpoint& source, const Endpoint& destination);
/// "PROXY UNKNOWN\r\n": the proxy cannot tell (v1's form of LOCAL).
std::string encode_proxy_v1_unknown();
/// A v2 PROXY header for TCP from `source` to `destination` (same family:
/// asserted), followed by `tlvs` (each value at most 65535 bytes, and the
/// whole header at most kProxyV2MaxLength: asserted). A CRC32C TLV among
/// them (type 0x03, any 4 bytes) is filled in with the header's checksum.
std::string encode_proxy_v2(const Endpoint& source, const Endpoint& destination,
                            const std::vector<ProxyTlv>& tlvs = {});
/// A v2 LOCAL header (family UNSPEC, no addresses), as health checks send it.
std::string encode_proxy_v2_local();

}  // namespace tcpkit

/// \file
/// Endpoint: an IPv4 or IPv6 address plus a TCP port, as a value.
///
/// Parses the forms users type ("127.0.0.1:8888", "[::1]:8888", "8888" is not
/// an endpoint), formats back the same way, and resolves host names with
/// getaddrinfo. Plain value type: copy freely, use from any thread.
///
/// Only AF_INET and AF_INET6 fit (28 bytes, the size of sockaddr_in6): every
/// connection keeps two endpoints, so a sockaddr_storage (128 bytes) for
/// address families TCP never uses would cost 200 bytes per connection.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tcpkit/result.h"

namespace tcpkit {

class Endpoint {
 public:
  /// 0.0.0.0:0.
  Endpoint();
  /// Wraps a kernel address (AF_INET or AF_INET6); other families (AF_UNIX)
  /// are asserted against, and at most sizeof(sockaddr_in6) bytes are copied.
  explicit Endpoint(const sockaddr* addr, socklen_t len);

  /// Numeric literals only: "127.0.0.1:8888", "[::1]:8888", "[fe80::1%lo]:80".
  static Result<Endpoint> parse(std::string_view text);
  /// A numeric host ("::1", "10.0.0.1"; brackets optional) plus a port.
  static Result<Endpoint> parse(std::string_view host, uint16_t port);
  /// Parses a port number "0".."65535" with a clear error for anything else.
  static Result<uint16_t> parse_port(std::string_view text);
  /// Splits "host:port" / "[v6]:port" without interpreting the host.
  static Result<std::pair<std::string, uint16_t>> split_host_port(std::string_view text);

  /// Names or literals, via getaddrinfo; IPv4 and IPv6 results, in the
  /// resolver's order. Never empty on success.
  static Result<std::vector<Endpoint>> resolve(std::string_view host, uint16_t port);
  /// "localhost:8888", "[::1]:80", "example.net:443".
  static Result<std::vector<Endpoint>> resolve(std::string_view text);

  static Endpoint loopback_v4(uint16_t port);
  static Endpoint loopback_v6(uint16_t port);
  static Endpoint any_v4(uint16_t port);

  int family() const { return addr_.any.sa_family; }
  bool is_v6() const { return family() == AF_INET6; }
  /// 0.0.0.0 or ::, the wildcard a server listens on to serve every interface.
  bool is_unspecified() const;
  uint16_t port() const;
  void set_port(uint16_t port);
  /// The address alone: "127.0.0.1", "::1".
  std::string host() const;
  /// "127.0.0.1:8888", "[::1]:8888".
  std::string to_string() const;

  const sockaddr* sockaddr_ptr() const { return &addr_.any; }
  socklen_t sockaddr_len() const;

  friend bool operator==(const Endpoint& a, const Endpoint& b);

 private:
  union Address {
    sockaddr any;
    sockaddr_in v4;
    sockaddr_in6 v6;
  };
  Address addr_{};
};

}  // namespace tcpkit

/// \file
/// Endpoint: an IPv4 or IPv6 address plus a TCP port, or a Unix-domain
/// socket, as a value.
///
/// Parses the forms users type ("127.0.0.1:8888", "[::1]:8888",
/// "unix:/tmp/a.sock", "unix:@name" for a Linux abstract socket; "8888" is
/// not an endpoint), formats back the same way, and resolves host names with
/// getaddrinfo. Plain value type: copy freely, use from any thread.
///
/// An Endpoint is 28 bytes, the size of sockaddr_in6: every connection keeps
/// two, so a sockaddr_storage (128 bytes), or a sockaddr_un (110 bytes), would
/// cost some 200 bytes per connection. A Unix path lives in a reference-counted
/// immutable block instead, whose pointer sits in the same 28 bytes: every
/// connection accepted on one listener points at the listener's path, and the
/// inline bytes also hold what differs per peer, its credentials (SO_PEERCRED).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tcpkit/result.h"

namespace tcpkit {

/// Who is at the other end of a Unix socket, as the kernel recorded it when
/// that process called connect() or listen() (SO_PEERCRED).
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

class Endpoint {
 public:
  /// The prefix that marks a Unix-domain socket in text: "unix:/tmp/a.sock".
  static constexpr std::string_view kUnixPrefix = "unix:";

  /// 0.0.0.0:0.
  Endpoint();
  Endpoint(const Endpoint& other);
  Endpoint(Endpoint&& other) noexcept;
  Endpoint& operator=(const Endpoint& other);
  Endpoint& operator=(Endpoint&& other) noexcept;
  ~Endpoint();
  /// Wraps a kernel address: AF_INET, AF_INET6 or AF_UNIX (a path is copied
  /// into a block of its own). Other families are asserted against.
  explicit Endpoint(const sockaddr* addr, socklen_t len);

  /// Numeric literals only: "127.0.0.1:8888", "[::1]:8888", and Unix
  /// sockets: "unix:/tmp/a.sock", "unix:@name" (abstract). An IPv6 zone is an
  /// interface name or index: "[fe80::1%lo]:80", "[fe80::1%1]:80". Brackets
  /// hold IPv6 only ("[1.2.3.4]:80" is refused), and so is an empty zone.
  static Result<Endpoint> parse(std::string_view text);
  /// A Unix-domain socket: a file system path ("/tmp/a.sock", "./a.sock") or,
  /// with a leading '@', a Linux abstract name ("@tcpkit", never a file).
  /// A path longer than sockaddr_un holds (107 bytes) is ENAMETOOLONG.
  static Result<Endpoint> unix_socket(std::string_view path);
  /// True for "unix:..." text, the one spelling of a Unix socket address.
  static bool names_unix_socket(std::string_view text) {
    return text.substr(0, kUnixPrefix.size()) == kUnixPrefix;
  }
  /// A numeric host ("::1", "10.0.0.1", "fe80::1%eth0"; brackets optional
  /// around IPv6, refused around IPv4) plus a port.
  static Result<Endpoint> parse(std::string_view host, uint16_t port);
  /// Parses a port number "0".."65535" with a clear error for anything else.
  static Result<uint16_t> parse_port(std::string_view text);
  /// Splits "host:port" / "[v6]:port" without interpreting the host, except
  /// that what brackets hold must look like IPv6 (have a ':').
  static Result<std::pair<std::string, uint16_t>> split_host_port(std::string_view text);

  /// Names or literals, via getaddrinfo; IPv4 and IPv6 results, in the
  /// resolver's order. Never empty on success.
  static Result<std::vector<Endpoint>> resolve(std::string_view host, uint16_t port);
  /// "localhost:8888", "[::1]:80", "example.net:443"; "unix:PATH" is
  /// parsed, never resolved.
  static Result<std::vector<Endpoint>> resolve(std::string_view text);

  static Endpoint loopback_v4(uint16_t port);
  static Endpoint loopback_v6(uint16_t port);
  static Endpoint any_v4(uint16_t port);

  int family() const { return addr_.any.sa_family; }
  bool is_v6() const { return family() == AF_INET6; }
  bool is_unix() const { return family() == AF_UNIX; }
  /// A Linux abstract Unix socket ("unix:@name"): no file, gone with its socket.
  bool is_abstract() const;
  /// The Unix socket's path ("/tmp/a.sock"), or "@name" for an abstract one;
  /// empty for TCP and for an unnamed Unix socket (a client that never bound).
  std::string unix_path() const;
  /// The peer's pid/uid/gid: set on the peer of a Unix connection accepted by
  /// TcpListener or TcpServer; empty otherwise.
  std::optional<PeerCredentials> credentials() const;
  /// This address, with `who` as the credentials of the process behind it.
  Endpoint with_credentials(const PeerCredentials& who) const;
  /// 0.0.0.0 or ::, the wildcard a server listens on to serve every interface.
  bool is_unspecified() const;
  /// 127.0.0.0/8, the IPv6 loopback, or a 127.0.0.0/8 address mapped into IPv6:
  /// this host's loopback. False for a Unix socket.
  bool is_loopback() const;
  uint16_t port() const;
  void set_port(uint16_t port);
  /// The address alone: "127.0.0.1", "::1", "fe80::1%eth0" (an IPv6 zone as
  /// its interface's name, or as the index when no interface has it), which
  /// parse(host, port) reads back; a Unix socket's unix_path().
  std::string host() const;
  /// "127.0.0.1:8888", "[::1]:8888", "[fe80::1%eth0]:80", "unix:/tmp/a.sock",
  /// "unix:@name", which parse() reads back to an equal Endpoint; a Unix
  /// peer with credentials adds them: "unix:/tmp/a.sock (pid 1234, uid 0)".
  std::string to_string() const;

  const sockaddr* sockaddr_ptr() const;
  socklen_t sockaddr_len() const;

  /// Compares the addresses; credentials are not part of an address.
  friend bool operator==(const Endpoint& a, const Endpoint& b);

 private:
  struct UnixName;  ///< a sockaddr_un, its length and a reference count
  /// What a Unix endpoint keeps inline: the family, the credentials of the
  /// peer (which differ per connection), and the pointer to the shared path
  /// (null when unnamed). The pointer is kept as bytes so that the union
  /// keeps the 4-byte alignment of the socket addresses, and its 28 bytes.
  struct UnixInline {
    sa_family_t family;
    bool has_credentials;
    pid_t pid;
    uid_t uid;
    gid_t gid;
    unsigned char name[sizeof(void*)];
  };
  union Address {
    sockaddr any;
    sockaddr_in v4;
    sockaddr_in6 v6;
    UnixInline un;
  };
  static_assert(sizeof(Address) == sizeof(sockaddr_in6),
                "a Unix endpoint must not grow every connection");

  /// parse()'s work on an unbracketed host, numeric only; `bracketed` says
  /// whether the text had brackets. An error's context is only the reason
  /// ("" or " (...)"), for the caller to put after the text it was given.
  static Result<Endpoint> parse_literal(std::string_view host, bool bracketed, uint16_t port);

  /// All 28 bytes zero. `Address{}` initialises the first member (a 16-byte
  /// sockaddr) only, and clang leaves the other bytes as it finds them: a
  /// stray sin6_scope_id under an IPv6 address, a stray path pointer under
  /// an unnamed Unix socket.
  static Address zeroed_address();
  /// The shared path of a named Unix endpoint; null otherwise.
  const UnixName* unix_name() const;
  void set_unix_name(const UnixName* name);
  void retain() const;
  void release();

  Address addr_ = zeroed_address();
};

}  // namespace tcpkit

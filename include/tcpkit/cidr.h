/// \file
/// Cidr and AccessList: which peers a server talks to, by address.
///
/// A Cidr is one network ("10.0.0.0/8", "::1/128") or one host ("192.168.1.5",
/// which means /32, or /128 for IPv6). An AccessList holds allow and deny rules
/// with ncat's semantics: a peer matched by any deny rule is refused; when there
/// are allow rules, a peer matched by none of them is refused too; deny wins.
///
/// IPv4 clients of a dual-stack (::) listener arrive as IPv4-mapped IPv6
/// addresses ("::ffff:10.1.2.3"). Both rules and peers are compared in one
/// 128-bit form where IPv4 is mapped, so such a peer matches the IPv4 rule a
/// user wrote, and "::ffff:10.0.0.0/104" is the same rule as "10.0.0.0/8".
///
/// Plain value types: copy freely; const methods are safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"

namespace tcpkit {

class Cidr {
 public:
  /// "10.0.0.0/8", "::1/128", "[::1]/128", "192.168.1.5" (a host). Numeric
  /// addresses only. Host bits under the prefix are ignored ("10.1.2.3/8" is
  /// 10.0.0.0/8), as ncat and ip(8) do. Errors name the text:
  /// Errc::bad_address "CIDR 'x/8'", Errc::bad_prefix "CIDR '10.0.0.0/33'".
  static Result<Cidr> parse(std::string_view text);

  /// Whether the peer's address lies in this network (the port is ignored);
  /// never for a Unix-domain peer, which has no IP address.
  bool contains(const Endpoint& peer) const;

  /// IPv4 rules (mapped IPv6 rules included) report AF_INET.
  int family() const { return v4_ ? AF_INET : AF_INET6; }
  /// In the rule's own family: 0..32 for IPv4, 0..128 for IPv6.
  int prefix_length() const { return v4_ ? prefix_ - 96 : prefix_; }
  /// The canonical form: "10.0.0.0/8", "::1/128".
  std::string to_string() const;

  friend bool operator==(const Cidr& a, const Cidr& b) = default;

 private:
  using Bytes = std::array<uint8_t, 16>;

  Cidr(const Bytes& network, int prefix, bool v4);

  Bytes network_{};  ///< 128-bit form, host bits cleared
  int prefix_ = 0;   ///< 0..128 in the 128-bit form
  bool v4_ = false;
};

class AccessList {
 public:
  void allow(const Cidr& rule) { allowed_.push_back(rule); }
  void deny(const Cidr& rule) { denied_.push_back(rule); }

  /// Deny wins; with no allow rules everyone not denied is permitted.
  bool permits(const Endpoint& peer) const;

  /// No rules at all: every peer is permitted.
  bool empty() const { return allowed_.empty() && denied_.empty(); }
  const std::vector<Cidr>& allowed() const { return allowed_; }
  const std::vector<Cidr>& denied() const { return denied_; }

 private:
  std::vector<Cidr> allowed_;
  std::vector<Cidr> denied_;
};

}  // namespace tcpkit

#include "tcpkit/cidr.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace tcpkit {
namespace {

// ::ffff:0:0/96, the prefix of IPv4-mapped IPv6 addresses (RFC 4291 2.5.5.2).
constexpr std::array<uint8_t, 12> kMappedPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::string quoted(std::string_view text) {
  return "'" + std::string(text) + "'";
}

std::array<uint8_t, 16> mapped_v4(const void* v4_bytes) {
  std::array<uint8_t, 16> out{};
  std::memcpy(out.data(), kMappedPrefix.data(), kMappedPrefix.size());
  std::memcpy(out.data() + 12, v4_bytes, 4);
  return out;
}

bool is_mapped(const std::array<uint8_t, 16>& bytes) {
  return std::memcmp(bytes.data(), kMappedPrefix.data(), kMappedPrefix.size()) == 0;
}

// Compares the first `prefix` bits of a and b.
bool same_prefix(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, int prefix) {
  int whole = prefix / 8;
  if (std::memcmp(a.data(), b.data(), static_cast<size_t>(whole)) != 0) return false;
  int rest = prefix % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

void clear_host_bits(std::array<uint8_t, 16>* bytes, int prefix) {
  for (int bit = prefix; bit < 128; ++bit) {
    (*bytes)[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
  }
}

// The peer's address in the 128-bit form, IPv4 mapped.
std::array<uint8_t, 16> peer_bytes(const Endpoint& peer) {
  if (peer.family() == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(peer.sockaddr_ptr());
    return mapped_v4(&in->sin_addr);
  }
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(peer.sockaddr_ptr());
  std::array<uint8_t, 16> out{};
  std::memcpy(out.data(), &in6->sin6_addr, 16);
  return out;
}

}  // namespace

Cidr::Cidr(const Bytes& network, int prefix, bool v4)
    : network_(network), prefix_(prefix), v4_(v4) {
  clear_host_bits(&network_, prefix_);
}

Result<Cidr> Cidr::parse(std::string_view text) {
  std::string_view address = text;
  std::string_view prefix_text;
  bool has_prefix = false;
  if (auto slash = text.rfind('/'); slash != std::string_view::npos) {
    address = text.substr(0, slash);
    prefix_text = text.substr(slash + 1);
    has_prefix = true;
  }
  if (address.size() >= 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);
  }
  // inet_pton needs a terminated string, so an embedded NUL would cut the
  // text short and "10.0.0.1\0junk" would pass; anything longer than the
  // longest IPv6 literal is not an address anyway.
  if (address.empty() || address.size() >= INET6_ADDRSTRLEN ||
      address.find('\0') != std::string_view::npos) {
    return Error(Errc::bad_address, "CIDR " + quoted(text));
  }
  std::string host(address);
  Bytes bytes{};
  bool v4 = false;
  int max_prefix = 128;
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    bytes = mapped_v4(&a4);
    v4 = true;
    max_prefix = 32;
  } else if (::inet_pton(AF_INET6, host.c_str(), bytes.data()) != 1) {
    return Error(Errc::bad_address, "CIDR " + quoted(text));
  }
  int prefix = max_prefix;
  if (has_prefix) {
    // from_chars() takes a sign, and "/-0" read as /0 would allow everyone:
    // a prefix is plain decimal digits, nothing else.
    const bool digits = std::all_of(prefix_text.begin(), prefix_text.end(),
                                    [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) return Error(Errc::bad_prefix, "CIDR " + quoted(text));
    auto [end, ec] =
        std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), prefix);
    if (prefix_text.empty() || ec != std::errc() ||
        end != prefix_text.data() + prefix_text.size() || prefix < 0 || prefix > max_prefix) {
      return Error(Errc::bad_prefix, "CIDR " + quoted(text));
    }
  }
  if (v4) return Cidr(bytes, prefix + 96, true);
  // A mapped rule narrow enough to name only IPv4 addresses is an IPv4 rule.
  if (is_mapped(bytes) && prefix >= 96) return Cidr(bytes, prefix, true);
  return Cidr(bytes, prefix, false);
}

// A Unix peer has no IP address, so no network contains it: --allow lists
// refuse Unix clients, --deny lists let them through.
bool Cidr::contains(const Endpoint& peer) const {
  if (peer.is_unix()) return false;
  return same_prefix(network_, peer_bytes(peer), prefix_);
}

std::string Cidr::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (v4_) {
    ::inet_ntop(AF_INET, network_.data() + 12, text, sizeof(text));
  } else {
    ::inet_ntop(AF_INET6, network_.data(), text, sizeof(text));
  }
  return std::string(text) + "/" + std::to_string(prefix_length());
}

bool AccessList::permits(const Endpoint& peer) const {
  for (const auto& rule : denied_) {
    if (rule.contains(peer)) return false;
  }
  if (allowed_.empty()) return true;
  for (const auto& rule : allowed_) {
    if (rule.contains(peer)) return true;
  }
  return false;
}

}  // namespace tcpkit

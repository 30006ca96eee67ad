#include "tcpkit/endpoint.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <memory>

namespace tcpkit {
namespace {

std::string quoted(std::string_view text) {
  return "'" + std::string(text) + "'";
}

// Strips one pair of surrounding brackets: "[::1]" -> "::1".
std::string_view unbracket(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

const std::error_category& gai_category() {
  class GaiCategory : public std::error_category {
   public:
    const char* name() const noexcept override { return "getaddrinfo"; }
    std::string message(int ev) const override { return ::gai_strerror(ev); }
  };
  static const GaiCategory kCategory;
  return kCategory;
}

constexpr socklen_t kUnixPathOffset = offsetof(sockaddr_un, sun_path);

// Why "[1.2.3.4]:80" is refused: brackets mark an IPv6 literal (RFC 3986's
// IP-literal), never an IPv4 address or a name.
constexpr std::string_view kBracketsAreForIpv6 =
    " (brackets hold an IPv6 address only; write an IPv4 address or a name without them)";

}  // namespace

// Immutable once built, except for the count, so copies in any thread may
// share it (as std::shared_ptr's control block is shared).
struct Endpoint::UnixName {
  mutable std::atomic<uint32_t> refs{1};
  sockaddr_un addr{};
  socklen_t len = 0;
};

Endpoint::Address Endpoint::zeroed_address() {
  Address a;
  std::memset(&a, 0, sizeof a);
  return a;
}

Endpoint::Endpoint() {
  addr_.v4.sin_family = AF_INET;
}

Endpoint::Endpoint(const Endpoint& other) : addr_(other.addr_) {
  retain();
}

Endpoint::Endpoint(Endpoint&& other) noexcept : addr_(other.addr_) {
  other.addr_ = zeroed_address();
  other.addr_.v4.sin_family = AF_INET;
}

Endpoint& Endpoint::operator=(const Endpoint& other) {
  if (this == &other) return *this;
  other.retain();
  release();
  addr_ = other.addr_;
  return *this;
}

Endpoint& Endpoint::operator=(Endpoint&& other) noexcept {
  if (this == &other) return *this;
  release();
  addr_ = other.addr_;
  other.addr_ = zeroed_address();
  other.addr_.v4.sin_family = AF_INET;
  return *this;
}

Endpoint::~Endpoint() {
  release();
}

const Endpoint::UnixName* Endpoint::unix_name() const {
  if (!is_unix()) return nullptr;
  const UnixName* name = nullptr;
  // un.name is sizeof(void*) bytes: the pointer's bytes, exactly.
  std::memcpy(&name, addr_.un.name, sizeof addr_.un.name);
  return name;
}

void Endpoint::set_unix_name(const UnixName* name) {
  std::memcpy(addr_.un.name, &name, sizeof addr_.un.name);
}

void Endpoint::retain() const {
  if (const UnixName* name = unix_name()) name->refs.fetch_add(1, std::memory_order_relaxed);
}

void Endpoint::release() {
  const UnixName* name = unix_name();
  if (name == nullptr) return;
  set_unix_name(nullptr);
  if (name->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete name;
}

Endpoint::Endpoint(const sockaddr* addr, socklen_t len) {
  if (addr->sa_family == AF_UNIX) {
    addr_.un.family = AF_UNIX;
    // The kernel reports an unnamed socket (a client that never bound) with
    // no path bytes at all.
    if (len <= kUnixPathOffset) return;
    auto* name = new UnixName;
    name->len = std::min<socklen_t>(len, sizeof(sockaddr_un));
    std::memcpy(&name->addr, addr, name->len);
    set_unix_name(name);
    return;
  }
  assert(addr->sa_family == AF_INET || addr->sa_family == AF_INET6);
  assert(len <= sizeof(addr_));
  // Never past the union, even in a build without assertions.
  std::memcpy(&addr_, addr, std::min<size_t>(len, sizeof(addr_)));
}

Result<Endpoint> Endpoint::unix_socket(std::string_view path) {
  const std::string shown = quoted(std::string(kUnixPrefix) + std::string(path));
  if (path.empty() || path == "@")
    return Error(Errc::bad_address, "unix socket " + shown + " (no path)");
  // The kernel reads a path as a C string: an embedded NUL would name
  // another file than the one the user sees.
  if (path.find('\0') != std::string_view::npos)
    return Error(Errc::bad_address, "unix socket " + shown);
  const bool abstract = path.front() == '@';
  // A path needs its terminating NUL inside sun_path; an abstract name starts
  // with a NUL instead of '@'. Either way, one byte less than sun_path.
  constexpr size_t kMax = sizeof(sockaddr_un::sun_path) - 1;
  const size_t bytes = abstract ? path.size() - 1 : path.size();
  if (bytes > kMax) {
    return Error::from_errno(ENAMETOOLONG,
                             "unix socket " + shown + " is " + std::to_string(bytes) +
                                 " bytes long; at most " + std::to_string(kMax) +
                                 " fit (use a shorter path, e.g. under /tmp or /run)");
  }
  auto name = std::make_unique<UnixName>();
  name->addr.sun_family = AF_UNIX;
  if (abstract) {
    // Abstract names are byte strings of exactly this length, with no NUL at
    // the end: "@x" and "@x\0" would be two different sockets.
    std::memcpy(name->addr.sun_path + 1, path.data() + 1, bytes);
    name->len = static_cast<socklen_t>(kUnixPathOffset + 1 + bytes);
  } else {
    std::memcpy(name->addr.sun_path, path.data(), bytes);
    name->len = static_cast<socklen_t>(kUnixPathOffset + bytes + 1);
  }
  Endpoint ep;
  ep.addr_ = zeroed_address();
  ep.addr_.un.family = AF_UNIX;
  ep.set_unix_name(name.release());
  return ep;
}

Result<uint16_t> Endpoint::parse_port(std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > 65535) {
    return Error(Errc::bad_port, "port " + quoted(text));
  }
  return static_cast<uint16_t>(value);
}

Result<std::pair<std::string, uint16_t>> Endpoint::split_host_port(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) {
      return Error(Errc::bad_host, "address " + quoted(text) + " (no closing ']')");
    }
    host = text.substr(1, close - 1);
    // Every IPv6 address has a ':'; without one, this is IPv4 or a name.
    if (!host.empty() && host.find(':') == std::string_view::npos)
      return Error(Errc::bad_address, "address " + quoted(text) + std::string(kBracketsAreForIpv6));
    auto rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':')
      return Error(Errc::missing_port, "address " + quoted(text));
    port = rest.substr(1);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return Error(Errc::missing_port, "address " + quoted(text));
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    // Bare IPv6 ("::1:80") is ambiguous; insist on brackets.
    if (host.find(':') != std::string_view::npos) {
      return Error(Errc::bad_host, "address " + quoted(text) + " (write IPv6 as [ADDR]:PORT)");
    }
  }
  if (host.empty()) return Error(Errc::bad_host, "address " + quoted(text));
  auto p = parse_port(port);
  if (!p) return Error(p.error().code(), "address " + quoted(text) + ": port " + quoted(port));
  return std::pair<std::string, uint16_t>(std::string(host), *p);
}

Result<Endpoint> Endpoint::parse(std::string_view host, uint16_t port) {
  const std::string_view inner = unbracket(host);
  auto ep = parse_literal(inner, inner.size() != host.size(), port);
  if (!ep) return Error(ep.error().code(), "host " + quoted(host) + ep.error().context());
  return ep;
}

Result<Endpoint> Endpoint::parse(std::string_view text) {
  if (names_unix_socket(text)) return unix_socket(text.substr(kUnixPrefix.size()));
  auto hp = split_host_port(text);
  if (!hp) return hp.error();
  // split_host_port() took the brackets off (and refused them around text
  // with no ':'), so say whether there were any.
  auto ep = parse_literal(hp->first, text.front() == '[', hp->second);
  if (!ep) return Error(ep.error().code(), "address " + quoted(text) + ep.error().context());
  return ep;
}

Result<Endpoint> Endpoint::parse_literal(std::string_view host, bool bracketed, uint16_t port) {
  if (host.empty()) return Error(Errc::bad_host, "");
  // inet_pton and if_nametoindex read C strings: an embedded NUL would cut
  // the text short and let "10.0.0.1\0junk" through as 10.0.0.1.
  if (host.find('\0') != std::string_view::npos) return Error(Errc::bad_address, "");
  std::string h(host);
  Endpoint ep;
  auto* v4 = &ep.addr_.v4;
  if (::inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    if (bracketed) return Error(Errc::bad_address, std::string(kBracketsAreForIpv6));
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    return ep;
  }
  auto* v6 = &ep.addr_.v6;
  std::optional<std::string> zone;
  if (auto pct = h.find('%'); pct != std::string::npos) {
    zone = h.substr(pct + 1);
    h.resize(pct);
  }
  if (::inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) != 1) return Error(Errc::bad_address, "");
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(port);
  if (!zone) return ep;
  // RFC 4007's zone: an interface name ("%eth0") or index ("%2"). A name is
  // tried first, as getaddrinfo does, so an interface named "2" is found.
  if (zone->empty()) return Error(Errc::bad_address, " (empty zone after '%')");
  uint32_t index = ::if_nametoindex(zone->c_str());
  if (index == 0) {
    const char* first = zone->data();
    const char* last = first + zone->size();
    // Digits only: from_chars takes no sign, space or prefix for an unsigned.
    auto [end, ec] = std::from_chars(first, last, index);
    if (ec != std::errc() || end != last) {
      return Error(Errc::bad_address, " (zone " + quoted(*zone) +
                                          " is no interface, nor an interface index from 0 to " +
                                          std::to_string(UINT32_MAX) + ")");
    }
  }
  v6->sin6_scope_id = index;
  return ep;
}

Result<std::vector<Endpoint>> Endpoint::resolve(std::string_view host, uint16_t port) {
  // Literals never touch the resolver: fast and deterministic.
  auto literal = parse(host, port);
  if (literal) return std::vector<Endpoint>{*literal};
  std::string h(unbracket(host));
  // A name has no brackets, ':' or '%': such text is a literal, and the
  // literal's error says what is wrong with it (getaddrinfo would take
  // "[1.2.3.4]" for 1.2.3.4, and say only "not found" for "::1%").
  if (h.size() != host.size() || h.find_first_of(":%") != std::string::npos) return literal.error();
  if (h.empty()) return Error(Errc::bad_host, "resolve ''");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* list = nullptr;
  int rc = ::getaddrinfo(h.c_str(), nullptr, &hints, &list);
  if (rc == EAI_NONAME || rc == EAI_NODATA || rc == EAI_FAIL) {
    return Error(Errc::name_not_found, "resolve " + quoted(h));
  }
  if (rc != 0) return Error(std::error_code(rc, gai_category()), "resolve " + quoted(h));
  std::vector<Endpoint> out;
  for (auto* ai = list; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    Endpoint ep(ai->ai_addr, ai->ai_addrlen);
    ep.set_port(port);
    if (std::find(out.begin(), out.end(), ep) == out.end()) out.push_back(ep);
  }
  ::freeaddrinfo(list);
  if (out.empty()) return Error(Errc::name_not_found, "resolve " + quoted(h));
  return out;
}

Result<std::vector<Endpoint>> Endpoint::resolve(std::string_view text) {
  if (names_unix_socket(text)) {
    auto ep = parse(text);
    if (!ep) return ep.error();
    return std::vector<Endpoint>{*ep};
  }
  auto hp = split_host_port(text);
  if (!hp) return hp.error();
  return resolve(hp->first, hp->second);
}

Endpoint Endpoint::loopback_v4(uint16_t port) {
  return *parse("127.0.0.1", port);
}
Endpoint Endpoint::loopback_v6(uint16_t port) {
  return *parse("::1", port);
}
Endpoint Endpoint::any_v4(uint16_t port) {
  return *parse("0.0.0.0", port);
}

bool Endpoint::is_unspecified() const {
  if (is_v6()) return IN6_IS_ADDR_UNSPECIFIED(&addr_.v6.sin6_addr);
  return family() == AF_INET && addr_.v4.sin_addr.s_addr == htonl(INADDR_ANY);
}

bool Endpoint::is_loopback() const {
  if (family() == AF_INET) return (ntohl(addr_.v4.sin_addr.s_addr) >> 24) == 127;
  if (!is_v6()) return false;
  const in6_addr& a = addr_.v6.sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
}

bool Endpoint::is_abstract() const {
  const UnixName* name = unix_name();
  return name != nullptr && name->addr.sun_path[0] == '\0';
}

std::string Endpoint::unix_path() const {
  const UnixName* name = unix_name();
  if (name == nullptr) return {};
  const char* path = name->addr.sun_path;
  const size_t bytes = name->len - kUnixPathOffset;
  if (is_abstract()) return "@" + std::string(path + 1, bytes - 1);
  // The kernel may or may not count the terminating NUL in the length.
  return std::string(path, strnlen(path, bytes));
}

std::optional<PeerCredentials> Endpoint::credentials() const {
  if (!is_unix() || !addr_.un.has_credentials) return std::nullopt;
  return PeerCredentials{addr_.un.pid, addr_.un.uid, addr_.un.gid};
}

Endpoint Endpoint::with_credentials(const PeerCredentials& who) const {
  assert(is_unix());
  Endpoint ep = *this;
  ep.addr_.un.has_credentials = true;
  ep.addr_.un.pid = who.pid;
  ep.addr_.un.uid = who.uid;
  ep.addr_.un.gid = who.gid;
  return ep;
}

uint16_t Endpoint::port() const {
  if (is_unix()) return 0;
  return ntohs(is_v6() ? addr_.v6.sin6_port : addr_.v4.sin_port);
}

void Endpoint::set_port(uint16_t port) {
  if (is_unix()) return;
  if (is_v6()) {
    addr_.v6.sin6_port = htons(port);
  } else {
    addr_.v4.sin_port = htons(port);
  }
}

std::string Endpoint::host() const {
  if (is_unix()) return unix_path();
  char buf[INET6_ADDRSTRLEN] = {};
  if (!is_v6()) {
    ::inet_ntop(AF_INET, &addr_.v4.sin_addr, buf, sizeof buf);
    return buf;
  }
  ::inet_ntop(AF_INET6, &addr_.v6.sin6_addr, buf, sizeof buf);
  std::string text = buf;
  const uint32_t zone = addr_.v6.sin6_scope_id;
  if (zone == 0) return text;
  // The zone as parse() reads it back: the interface's name, or the index
  // itself when no interface has it (gone, or in another network namespace).
  char name[IF_NAMESIZE] = {};
  if (::if_indextoname(zone, name) != nullptr) return text + "%" + name;
  return text + "%" + std::to_string(zone);
}

std::string Endpoint::to_string() const {
  if (is_unix()) {
    std::string text = std::string(kUnixPrefix) + (unix_name() ? unix_path() : "(unnamed)");
    if (auto who = credentials()) {
      text += " (pid " + std::to_string(who->pid) + ", uid " + std::to_string(who->uid) + ")";
    }
    return text;
  }
  if (is_v6()) return "[" + host() + "]:" + std::to_string(port());
  return host() + ":" + std::to_string(port());
}

const sockaddr* Endpoint::sockaddr_ptr() const {
  if (const UnixName* name = unix_name()) return reinterpret_cast<const sockaddr*>(&name->addr);
  // An unnamed Unix socket is its family alone, which the inline bytes hold.
  return &addr_.any;
}

socklen_t Endpoint::sockaddr_len() const {
  if (is_unix()) {
    const UnixName* name = unix_name();
    return name ? name->len : static_cast<socklen_t>(sizeof(sa_family_t));
  }
  return is_v6() ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

bool operator==(const Endpoint& a, const Endpoint& b) {
  if (a.is_unix() || b.is_unix()) {
    return a.family() == b.family() && a.sockaddr_len() == b.sockaddr_len() &&
           std::memcmp(a.sockaddr_ptr(), b.sockaddr_ptr(), a.sockaddr_len()) == 0;
  }
  return a.family() == b.family() &&
         std::memcmp(a.sockaddr_ptr(), b.sockaddr_ptr(), a.sockaddr_len()) == 0;
}

}  // namespace tcpkit

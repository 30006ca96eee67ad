#include "common/proc_net.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "common/text_escape.h"

namespace tcpkit::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kServicesPath = "/etc/services";
constexpr const char* kPortRangePath = "/proc/sys/net/ipv4/ip_local_port_range";
constexpr const char* kUnprivilegedPortStartPath = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
constexpr int kStateListen = 0x0A;
constexpr int kTcpEstablished = 0x01;
// /proc/net/unix: __SO_ACCEPTCON in the Flags column marks a listener; St 3
// is SS_CONNECTED.
constexpr unsigned long kUnixAcceptCon = 0x10000;
constexpr unsigned long kUnixConnected = 3;

// The kernel's TCP state numbers (include/net/tcp_states.h), as printed in
// the "st" column of /proc/net/tcp. NEW_SYN_RECV is a request socket that is
// half-way through the handshake, which a learner knows as SYN_RECV.
constexpr std::array<const char*, 13> kStateNames = {
    "UNKNOWN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
    "CLOSE",   "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "SYN_RECV"};

// The tutorial's ports, for machines without /etc/services (minimal
// containers often lack it).
constexpr std::array<std::pair<uint16_t, const char*>, 5> kFallbackServices = {
    {{21, "ftp"}, {22, "ssh"}, {23, "telnet"}, {80, "http"}, {443, "https"}}};

// One row of /proc/net/tcp or /proc/net/tcp6.
struct TcpRow {
  std::string local_address;
  uint16_t local_port = 0;
  uint16_t remote_port = 0;
  int state = 0;
  unsigned long inode = 0;
};

std::optional<uint32_t> parse_hex32(std::string_view hex) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), value, 16);
  if (ec != std::errc{} || end != hex.data() + hex.size()) return std::nullopt;
  return value;
}

// The kernel prints an address as 32-bit words with %08X, each word read
// from memory in host byte order (so 127.0.0.1 is "0100007F" on x86).
// Copying each parsed word back into memory as-is restores the network-order
// bytes, whatever the machine's endianness.
std::optional<std::string> format_host(std::string_view hex) {
  const bool v6 = hex.size() == 32;
  if (!v6 && hex.size() != 8) return std::nullopt;
  std::array<unsigned char, 16> bytes{};
  for (size_t word = 0; word * 8 < hex.size(); ++word) {
    auto value = parse_hex32(hex.substr(word * 8, 8));
    if (!value) return std::nullopt;
    std::memcpy(bytes.data() + word * 4, &*value, 4);
  }
  char text[INET6_ADDRSTRLEN] = {};
  if (!::inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), text, sizeof text)) return std::nullopt;
  return v6 ? fmt::format("[{}]", text) : std::string(text);
}

// Splits "0100007F:22B8" into the formatted host and the port.
bool parse_endpoint(std::string_view field, std::string* host, uint16_t* port) {
  auto colon = field.find(':');
  if (colon == std::string_view::npos) return false;
  auto port_value = parse_hex32(field.substr(colon + 1));
  if (!port_value || *port_value > 0xFFFF) return false;
  *port = static_cast<uint16_t>(*port_value);
  if (!host) return true;
  auto formatted = format_host(field.substr(0, colon));
  if (!formatted) return false;
  *host = *formatted;
  return true;
}

// Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode.
std::optional<TcpRow> parse_row(const std::string& line) {
  std::istringstream in(line);
  std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
  TcpRow row;
  if (!(in >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
        timeout >> row.inode)) {
    return std::nullopt;
  }
  std::string local_host;
  if (!parse_endpoint(local, &local_host, &row.local_port)) return std::nullopt;
  if (!parse_endpoint(remote, nullptr, &row.remote_port)) return std::nullopt;
  auto state_value = parse_hex32(state);
  if (!state_value) return std::nullopt;
  row.state = static_cast<int>(*state_value);
  row.local_address = fmt::format("{}:{}", local_host, row.local_port);
  return row;
}

// Both tables; a missing one (IPv6 disabled) is simply empty.
std::vector<TcpRow> read_tcp_tables() {
  std::vector<TcpRow> rows;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      if (auto row = parse_row(line)) rows.push_back(std::move(*row));
    }
  }
  return rows;
}

std::string state_name(int state) {
  if (state < 0 || static_cast<size_t>(state) >= kStateNames.size()) return kStateNames[0];
  return kStateNames[static_cast<size_t>(state)];
}

std::optional<int> parse_pid(const std::string& name) {
  int pid = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
  if (ec != std::errc{} || end != name.data() + name.size()) return std::nullopt;
  return pid;
}

// The name as the kernel has it. Any process names itself
// (prctl(PR_SET_NAME)), so it is outside text: whoever prints it to a
// terminal escapes it (printable()), so that ESC sequences cannot rewrite
// the screen; JSON carries it as it is, in JSON's own escapes. The name may
// hold a newline itself: all of the file is read, less the one newline the
// kernel ends it with.
std::string read_comm(int pid) {
  std::ifstream in(fmt::format("/proc/{}/comm", pid));
  std::string name{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (name.ends_with('\n')) name.pop_back();
  return name.empty() ? "?" : name;
}

// An fd link to a socket reads "socket:[12345]"; returns 12345, or 0.
unsigned long socket_inode(const fs::path& link) {
  std::error_code ec;
  std::string target = fs::read_symlink(link, ec).string();
  constexpr std::string_view kPrefix = "socket:[";
  if (ec || !target.starts_with(kPrefix) || !target.ends_with(']')) return 0;
  unsigned long inode = 0;
  const char* first = target.data() + kPrefix.size();
  std::from_chars(first, target.data() + target.size() - 1, inode);
  return inode;
}

// Whether process `pid` holds one of `wanted` open; records it as the owner
// unless a lower pid already does. Unreadable fd folders (another user's
// process, or one that just exited) are skipped.
void scan_process_fds(int pid, const std::set<unsigned long>& wanted,
                      std::map<unsigned long, SocketOwner>& owners) {
  std::error_code ec;
  fs::directory_iterator fds(fmt::format("/proc/{}/fd", pid), ec);
  for (; !ec && fds != fs::directory_iterator(); fds.increment(ec)) {
    unsigned long inode = socket_inode(fds->path());
    if (inode == 0 || !wanted.contains(inode)) continue;
    auto it = owners.find(inode);
    if (it != owners.end() && it->second.pid < pid) continue;
    owners[inode] = SocketOwner{pid, read_comm(pid)};
  }
}

// Matches socket inodes to processes by walking every /proc/PID/fd.
std::map<unsigned long, SocketOwner> find_owners(const std::set<unsigned long>& wanted) {
  std::map<unsigned long, SocketOwner> owners;
  if (wanted.empty()) return owners;
  std::error_code ec;
  fs::directory_iterator procs("/proc", ec);
  for (; !ec && procs != fs::directory_iterator(); procs.increment(ec)) {
    if (auto pid = parse_pid(procs->path().filename().string()))
      scan_process_fds(*pid, wanted, owners);
  }
  return owners;
}

// One TCP service of /etc/services: "http 80/tcp www # WorldWideWeb HTTP".
struct Service {
  std::string name;
  uint16_t port = 0;
  std::vector<std::string> aliases;
  std::string protocol = "tcp";

  bool named(std::string_view text) const {
    return name == text || std::find(aliases.begin(), aliases.end(), text) != aliases.end();
  }
};

// A line of /etc/services that names a port ("tcp", "udp", "sctp"...), or
// nothing (a comment, a malformed line).
std::optional<Service> parse_service(std::string_view line) {
  std::istringstream fields{std::string(line.substr(0, line.find('#')))};
  Service service;
  std::string port_proto;
  if (!(fields >> service.name >> port_proto)) return std::nullopt;
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_proto.data(), port_proto.data() + port_proto.size(), port);
  if (ec != std::errc{} || *end != '/' || port > 0xFFFF ||
      end + 1 == port_proto.data() + port_proto.size()) {
    return std::nullopt;
  }
  service.port = static_cast<uint16_t>(port);
  service.protocol =
      std::string_view(port_proto).substr(static_cast<size_t>(end + 1 - port_proto.data()));
  for (std::string alias; fields >> alias;) service.aliases.push_back(std::move(alias));
  return service;
}

// The first TCP service that `wanted` accepts, in the order getservbyname()
// and getservbyport() search: /etc/services, or the tutorial's ports where
// that file cannot be read.
template <typename Predicate>
std::optional<Service> find_service(Predicate wanted) {
  std::ifstream in(kServicesPath);
  if (!in) {
    for (const auto& [number, name] : kFallbackServices) {
      Service service{name, number, {}};
      if (wanted(service)) return service;
    }
    return std::nullopt;
  }
  for (std::string line; std::getline(in, line);) {
    auto service = parse_service(line);
    if (service && wanted(*service)) return service;
  }
  return std::nullopt;
}

// Whether a /proc/net/unix path names the socket file the user gave. The
// kernel shows the path as bound ("./a.sock", "//tmp/a.sock", a path through
// a symbolic link), so besides the same text, an absolute path that is the
// same file (device and inode) matches too. Each path is looked up once.
class UnixPathMatcher {
 public:
  explicit UnixPathMatcher(const std::string& path) : path_(path) {
    struct stat st {};
    if (!path.starts_with('@') && ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      identity_ = {st.st_dev, st.st_ino};
    }
  }

  bool operator()(const std::string& row_path) {
    if (row_path == path_) return true;
    if (!identity_ || !row_path.starts_with('/')) return false;
    auto [it, added] = seen_.try_emplace(row_path, false);
    if (added) {
      struct stat st {};
      it->second = ::stat(row_path.c_str(), &st) == 0 && identity_->first == st.st_dev &&
                   identity_->second == st.st_ino;
    }
    return it->second;
  }

 private:
  const std::string& path_;
  std::optional<std::pair<dev_t, ino_t>> identity_;
  std::map<std::string, bool> seen_;
};

// Sends one sock_diag dump request (what ss uses) and calls `each` with
// every answer message and its attributes. False when netlink is
// unavailable or the dump failed, so that the caller may fall back.
template <typename Request, typename Message, typename Each>
bool sock_diag_dump(const Request& request, Each each) {
  const int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return false;
  const timeval timeout{1, 0};  // the kernel answers at once; never wait long
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  struct {
    nlmsghdr header;
    Request request;
  } packet{};
  packet.header.nlmsg_len = sizeof packet;
  packet.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  packet.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  packet.request = request;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &packet, sizeof packet, 0, reinterpret_cast<const sockaddr*>(&kernel),
               sizeof kernel) != static_cast<ssize_t>(sizeof packet)) {
    ::close(fd);
    return false;
  }
  alignas(nlmsghdr) std::array<char, 32768> buffer{};
  bool ok = false;
  for (bool done = false; !done;) {
    const ssize_t got = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (got <= 0) break;
    auto size = static_cast<unsigned>(got);
    for (const auto* header = reinterpret_cast<const nlmsghdr*>(buffer.data());
         NLMSG_OK(header, size); header = NLMSG_NEXT(header, size)) {
      if (header->nlmsg_type == NLMSG_DONE || header->nlmsg_type == NLMSG_ERROR) {
        ok = header->nlmsg_type == NLMSG_DONE;
        done = true;
        break;
      }
      if (header->nlmsg_len < NLMSG_LENGTH(sizeof(Message))) continue;
      const auto* message = static_cast<const Message*>(NLMSG_DATA(header));
      auto attributes_size =
          static_cast<unsigned>(header->nlmsg_len - NLMSG_LENGTH(sizeof(Message)));
      each(*message, reinterpret_cast<const rtattr*>(message + 1), attributes_size);
    }
  }
  ::close(fd);
  return ok;
}

// What /proc/net/tcp6 leaves out of an IPv6 LISTEN socket: whether it is
// IPV6_V6ONLY (INET_DIAG_SKV6ONLY, what ss reads to write "*:PORT" for a
// dual-stack socket) and the interface it is bound to (a link-local
// address's zone, "%eth0").
struct Ipv6Facts {
  std::optional<bool> v6only;
  unsigned interface = 0;
};

// Those facts for each IPv6 LISTEN socket on `port`, by inode, from the
// kernel's sock_diag interface. Empty when netlink is unavailable.
std::map<unsigned long, Ipv6Facts> ipv6_listener_facts(uint16_t port) {
  std::map<unsigned long, Ipv6Facts> facts;
  inet_diag_req_v2 request{};
  request.sdiag_family = AF_INET6;
  request.sdiag_protocol = IPPROTO_TCP;
  request.idiag_states = 1U << kStateListen;
  request.id.idiag_sport = htons(port);
  sock_diag_dump<inet_diag_req_v2, inet_diag_msg>(
      request, [&](const inet_diag_msg& message, const rtattr* attribute, unsigned size) {
        if (ntohs(message.id.idiag_sport) != port) return;
        Ipv6Facts& socket = facts[message.idiag_inode];
        socket.interface = message.id.idiag_if;
        for (; RTA_OK(attribute, size); attribute = RTA_NEXT(attribute, size)) {
          if (attribute->rta_type == INET_DIAG_SKV6ONLY && RTA_PAYLOAD(attribute) >= 1) {
            socket.v6only = *static_cast<const uint8_t*>(RTA_DATA(attribute)) != 0;
          }
        }
      });
  return facts;
}

// "[fe80::1]:8888" with its zone: "[fe80::1%eth0]:8888", as tcpkit writes
// an endpoint (the interface's index where it has no name).
std::string with_zone(const std::string& address, unsigned interface) {
  const size_t bracket = address.find(']');
  if (interface == 0 || bracket == std::string::npos) return address;
  std::array<char, IF_NAMESIZE> name{};
  const std::string zone = ::if_indextoname(interface, name.data()) != nullptr
                               ? std::string(name.data())
                               : std::to_string(interface);
  return address.substr(0, bracket) + "%" + zone + address.substr(bracket);
}

// One named Unix socket: its path as bound ("@name" for an abstract one).
struct UnixRow {
  std::string path;
  unsigned long inode = 0;
  bool listening = false;
  bool connected = false;
  bool datagram = false;  // SOCK_DGRAM: bound, it receives without listening
};

// Every named Unix socket from sock_diag (UNIX_DIAG_NAME), whose path comes
// as the bytes bound, a newline among them; empty when netlink is
// unavailable. /proc/net/unix writes a path raw on its line, so a path with
// a newline broke its row there, and its second half could read as a row.
std::optional<std::vector<UnixRow>> unix_rows_from_netlink() {
  std::vector<UnixRow> rows;
  unix_diag_req request{};
  request.sdiag_family = AF_UNIX;
  request.udiag_states = ~0U;
  request.udiag_show = UDIAG_SHOW_NAME;
  const bool ok = sock_diag_dump<unix_diag_req, unix_diag_msg>(
      request, [&](const unix_diag_msg& message, const rtattr* attribute, unsigned size) {
        for (; RTA_OK(attribute, size); attribute = RTA_NEXT(attribute, size)) {
          if (attribute->rta_type != UNIX_DIAG_NAME || RTA_PAYLOAD(attribute) == 0) continue;
          std::string path(static_cast<const char*>(RTA_DATA(attribute)), RTA_PAYLOAD(attribute));
          // An abstract name starts with a NUL; /proc/net/unix and tcpkit
          // write each NUL in it as '@'. A path is a C string: the bytes
          // bound may go on past its NUL.
          if (path.front() == '\0') {
            std::replace(path.begin(), path.end(), '\0', '@');
          } else {
            path.resize(std::min(path.size(), path.find('\0')));
          }
          rows.push_back(
              UnixRow{std::move(path), message.udiag_ino, message.udiag_state == kStateListen,
                      message.udiag_state == kTcpEstablished, message.udiag_type == SOCK_DGRAM});
        }
      });
  if (!ok) return std::nullopt;
  return rows;
}

// The same from /proc/net/unix, where netlink is unavailable. Columns: Num
// RefCount Protocol Flags Type St Inode [Path]. The path is the rest of the
// line after one space: it may hold spaces itself.
std::vector<UnixRow> unix_rows_from_proc() {
  std::vector<UnixRow> rows;
  std::ifstream in("/proc/net/unix");
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string num, refcount, protocol, flags, type, state, row_path;
    unsigned long inode = 0;
    if (!(fields >> num >> refcount >> protocol >> flags >> type >> state >> inode)) continue;
    std::getline(fields, row_path);
    if (row_path.empty() || row_path.front() != ' ') continue;  // an unnamed socket
    row_path.erase(0, 1);
    auto flag_bits = parse_hex32(flags);
    auto state_value = parse_hex32(state);
    auto type_value = parse_hex32(type);
    rows.push_back(UnixRow{
        std::move(row_path), inode, flag_bits && (*flag_bits & kUnixAcceptCon) != 0,
        state_value && *state_value == kUnixConnected, type_value && *type_value == SOCK_DGRAM});
  }
  return rows;
}

}  // namespace

std::vector<ListeningSocket> find_listeners(uint16_t port) {
  std::vector<ListeningSocket> listeners;
  std::set<unsigned long> inodes;
  for (auto& row : read_tcp_tables()) {
    if (row.state != kStateListen || row.local_port != port) continue;
    inodes.insert(row.inode);
    listeners.push_back(
        ListeningSocket{std::move(row.local_address), port, row.inode, std::nullopt});
  }
  auto owners = find_owners(inodes);
  std::optional<std::map<unsigned long, Ipv6Facts>> ipv6;
  for (auto& listener : listeners) {
    if (auto it = owners.find(listener.inode); it != owners.end()) listener.owner = it->second;
    if (!listener.address.starts_with('[')) continue;
    if (!ipv6) ipv6 = ipv6_listener_facts(port);
    auto facts = ipv6->find(listener.inode);
    const bool wildcard = listener.address.starts_with("[::]:");
    if (facts == ipv6->end()) {
      if (wildcard) listener.dual_stack = std::nullopt;
      continue;
    }
    if (wildcard) {
      listener.dual_stack =
          facts->second.v6only ? std::optional<bool>(!*facts->second.v6only) : std::nullopt;
    }
    listener.address = with_zone(listener.address, facts->second.interface);
  }
  return listeners;
}

std::map<std::string, int> count_states(uint16_t port) {
  std::map<std::string, int> counts;
  for (const auto& row : read_tcp_tables()) {
    if (row.state == kStateListen) continue;
    if (row.local_port == port || row.remote_port == port) ++counts[state_name(row.state)];
  }
  return counts;
}

std::optional<std::string> service_name(uint16_t port) {
  auto service =
      find_service([port](const Service& s) { return s.protocol == "tcp" && s.port == port; });
  if (!service) return std::nullopt;
  return std::move(service->name);
}

std::optional<uint16_t> service_port(std::string_view name) {
  auto service =
      find_service([name](const Service& s) { return s.protocol == "tcp" && s.named(name); });
  if (!service) return std::nullopt;
  return service->port;
}

std::optional<std::string> non_tcp_service(std::string_view name) {
  auto service =
      find_service([name](const Service& s) { return s.protocol != "tcp" && s.named(name); });
  if (!service) return std::nullopt;
  return fmt::format("{}/{}", service->port, service->protocol);
}

bool services_file_readable() {
  return static_cast<bool>(std::ifstream(kServicesPath));
}

std::optional<PortRange> ephemeral_port_range() {
  std::ifstream in(kPortRangePath);
  unsigned low = 0, high = 0;
  if (!(in >> low >> high) || low > high || high > 0xFFFF) return std::nullopt;
  return PortRange{static_cast<uint16_t>(low), static_cast<uint16_t>(high)};
}

bool reserved_local_port(uint16_t port) {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_reserved_ports");
  std::string list;
  std::getline(in, list);
  std::istringstream items(list);
  for (std::string item; std::getline(items, item, ',');) {
    unsigned low = 0;
    unsigned high = 0;
    const char* first = item.data();
    const char* last = item.data() + item.size();
    auto [end, ec] = std::from_chars(first, last, low);
    if (ec != std::errc{}) continue;
    high = low;
    if (end != last && *end == '-') std::from_chars(end + 1, last, high);
    if (port >= low && port <= high) return true;
  }
  return false;
}

std::optional<unsigned> unprivileged_port_start() {
  std::ifstream in(kUnprivilegedPortStartPath);
  unsigned start = 0;
  if (!(in >> start) || start > 0x10000) return std::nullopt;
  return start;
}

UnixSocketUsage find_unix_socket(const std::string& path) {
  UnixSocketUsage usage;
  std::set<unsigned long> inodes;
  UnixPathMatcher matches(path);
  auto rows = unix_rows_from_netlink();
  if (!rows) rows = unix_rows_from_proc();
  for (auto& row : *rows) {
    if (!matches(row.path)) continue;
    if (row.datagram) {
      inodes.insert(row.inode);
      usage.datagram.push_back(
          ListeningSocket{"unix:" + std::move(row.path), 0, row.inode, std::nullopt});
    } else if (row.listening) {
      inodes.insert(row.inode);
      usage.listeners.push_back(
          ListeningSocket{"unix:" + std::move(row.path), 0, row.inode, std::nullopt});
    } else if (row.connected) {
      ++usage.connections;
    }
  }
  auto owners = find_owners(inodes);
  for (auto* sockets : {&usage.listeners, &usage.datagram}) {
    for (auto& socket : *sockets) {
      if (auto it = owners.find(socket.inode); it != owners.end()) socket.owner = it->second;
    }
  }
  return usage;
}

std::string describe_port_holder(uint16_t port) {
  std::string description;
  for (const auto& listener : find_listeners(port)) {
    if (!description.empty()) description += "; ";
    if (listener.owner) {
      description += fmt::format("pid {} ({}) listens on {}", listener.owner->pid,
                                 printable(listener.owner->name), listener.address);
    } else {
      description +=
          fmt::format("an unknown process (try as root) listens on {}", listener.address);
    }
  }
  return description;
}

}  // namespace tcpkit::cli

// Facts about a TCP port, read from the kernel's /proc tables and from
// /etc/services: who listens on it, how many connections it has in each TCP
// state, its well-known service name and whether it is an ephemeral port.
// Used by `tcpkit port` to explain a port and by `tcpkit serve` to name the
// holder of a port when bind() fails with "Address already in use".
// Plain functions of the program layer; each call reads /proc afresh and may
// be called from any thread. Nothing here needs root, but without it other
// users' processes cannot be matched to their sockets.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tcpkit::cli {

// A process holding a socket open: its pid and its name from /proc/PID/comm,
// as the kernel has it (a process names itself: outside text, so escape it
// with printable() before it reaches a terminal).
struct SocketOwner {
  int pid;
  std::string name;
};

// One LISTEN socket from /proc/net/tcp or /proc/net/tcp6.
struct ListeningSocket {
  std::string address;  // "127.0.0.1:8888", "[::1]:8888", "[fe80::1%eth0]:8888"
  uint16_t port;
  unsigned long inode;
  std::optional<SocketOwner> owner;  // empty when /proc/PID/fd was not readable
  // For an IPv6 socket on the wildcard address ("[::]:8888"): whether IPv4
  // clients reach it too (IPV6_V6ONLY off, so ss shows "*:8888"), which
  // /proc/net/tcp6 does not say; read from the kernel's sock_diag netlink
  // interface, as ss does. False for every other socket; empty when the
  // kernel would not say.
  std::optional<bool> dual_stack = false;
};

// The local port range the kernel picks from for outgoing connections
// (/proc/sys/net/ipv4/ip_local_port_range), inclusive.
struct PortRange {
  uint16_t low;
  uint16_t high;
};

// Every LISTEN socket on `port`, IPv4 first, then IPv6, each with the process
// holding it when that can be found (the lowest pid when several share it,
// which after fork() is usually the parent).
std::vector<ListeningSocket> find_listeners(uint16_t port);

// How many sockets whose local or remote port is `port` are in each TCP state
// ("ESTABLISHED", "TIME_WAIT", "CLOSE_WAIT", ...). LISTEN sockets are left
// out: find_listeners() reports them. A connection between two programs on
// this machine counts twice, once for each end.
std::map<std::string, int> count_states(uint16_t port);

// The TCP service name for `port` from /etc/services ("http" for 80), or
// from a small built-in table of the tutorial's ports when that file is
// missing; empty when the port has no name.
std::optional<std::string> service_name(uint16_t port);

// The other way round: the TCP port of a service name or alias ("http",
// "www": 80), from the same file or table; empty when no service has it.
std::optional<uint16_t> service_port(std::string_view name);

// For a name that /etc/services gives another protocol only ("ntp"):
// where it is there ("123/udp"), to say why it is no TCP port; empty
// otherwise. Meant after service_port() found no TCP port for the name.
std::optional<std::string> non_tcp_service(std::string_view name);

// Whether /etc/services could be read; service_name() falls back otherwise.
bool services_file_readable();

// The ephemeral port range, or empty when /proc does not say.
std::optional<PortRange> ephemeral_port_range();

// Whether `port` is in /proc/sys/net/ipv4/ip_local_reserved_ports ("8080,
// 9000-9010"): a port there the kernel never picks for a client, even
// inside the ephemeral range. False when the file is absent.
bool reserved_local_port(uint16_t port);

// The lowest port any user may bind (/proc/sys/net/ipv4/
// ip_unprivileged_port_start: 1024 by default, often 0 in containers, and
// per network namespace); below it binding needs root or
// CAP_NET_BIND_SERVICE. Empty when /proc does not say.
std::optional<unsigned> unprivileged_port_start();

// A Unix-domain socket path from the kernel's sock_diag netlink interface
// (/proc/net/unix where that is unavailable): its listening sockets (with
// their processes, found through the same /proc/PID/fd walk as for ports)
// and how many connections it has open (the server-side end of each one,
// which carries the path; the client end is unnamed).
struct UnixSocketUsage {
  std::vector<ListeningSocket> listeners;  // address "unix:PATH", port 0
  int connections = 0;
  // Datagram sockets bound to the path (a syslog's /dev/log): they receive
  // without listening or connections.
  std::vector<ListeningSocket> datagram;
};
// `path`: "/tmp/a.sock", or "@name" for an abstract socket. A row matches
// when it holds the same text or, for an absolute path in the table, the
// same socket file (device and inode), however the server spelled it; a
// listener's address is "unix:" + the path as the server bound it.
UnixSocketUsage find_unix_socket(const std::string& path);

// One line for an error message: "pid 1234 (python3) listens on
// 127.0.0.1:8888", with several listeners joined by "; ", or "" when nothing
// listens on `port`.
std::string describe_port_holder(uint16_t port);

}  // namespace tcpkit::cli

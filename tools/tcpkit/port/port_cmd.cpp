// `tcpkit port PORT`: explains a TCP port to someone learning TCP — its
// service name, which range it is in, who listens on it and how many
// connections it has in each state — as text, or as JSON with --json.
// `tcpkit port unix:PATH` (or a PATH with a '/') explains a Unix-domain
// socket the same way: who listens on it and how many connections are open.
#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <memory>
#include <optional>
#include <string_view>

#include <sys/stat.h>

#include "commands.h"
#include "common/json_writer.h"
#include "common/proc_net.h"
#include "common/text_escape.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/tcp_stream.h"

namespace tcpkit::cli {
namespace {

struct PortOptions {
  std::string port_text;
  bool json = false;
};

// Everything the command says about one port, gathered before printing so
// the text and JSON forms report the same facts.
struct PortReport {
  uint16_t port = 0;
  std::optional<std::string> service;
  bool services_file = false;
  const char* range = "";
  std::optional<PortRange> ephemeral_range;
  bool ephemeral = false;
  bool reserved = false;                       // in ip_local_reserved_ports: never a client's port
  std::optional<unsigned> unprivileged_start;  // ip_unprivileged_port_start
  std::vector<ListeningSocket> listeners;
  std::map<std::string, int> states;
};

// The order a connection's life runs in, so the counts read as a story.
constexpr std::array<const char*, 11> kStateOrder = {
    "SYN_SENT",   "SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
    "CLOSE_WAIT", "LAST_ACK", "CLOSING",     "CLOSE",     "UNKNOWN"};

constexpr const char* kTimeWaitNote =
    "TIME_WAIT: this side closed first, so the kernel keeps the connection's address pair for "
    "about "
    "60 s (2*MSL) to let late packets die out; a server restarting on this port still binds at "
    "once "
    "because tcpkit sets SO_REUSEADDR by default (without it, bind() fails with the tutorial's "
    "\"Address already in use\").";
constexpr const char* kCloseWaitNote =
    "CLOSE_WAIT: the peer has closed its end (recv() returned 0 bytes) but the local program has "
    "not "
    "called close() yet; sockets that stay here mean a program forgets to close them.";

std::optional<uint16_t> parse_number(std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(value);
}

// "80/tcp", "http/udp", "9/sctp": a port with its protocol, as
// /etc/services and ss write it (not a path, though it holds a '/'), in
// lower case. Empty when `text` has none.
std::string_view protocol_of(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || text.find('/', slash + 1) != text.npos) {
    return {};
  }
  const std::string_view protocol = text.substr(slash + 1);
  for (std::string_view known : {"tcp", "udp", "sctp", "dccp"}) {
    if (std::equal(
            protocol.begin(), protocol.end(), known.begin(), known.end(),
            [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; })) {
      return known;
    }
  }
  return {};
}

// What PORT names: a number; a service from /etc/services ("http", or an
// alias such as "www"); either with "/tcp". The error says why not.
struct PortArgument {
  std::optional<uint16_t> port;
  std::string error;
};

PortArgument parse_port(std::string_view text) {
  const std::string_view protocol = protocol_of(text);
  const std::string_view name = protocol.empty() ? text : text.substr(0, text.find('/'));
  if (!protocol.empty() && protocol != "tcp") {
    std::string upper(protocol);
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return {std::nullopt,
            fmt::format("'{}' is {} {} port: tcpkit port explains TCP ports (give {}/tcp or {})",
                        printable(text), protocol == "sctp" ? "an" : "a", upper, printable(name),
                        printable(name))};
  }
  if (auto number = parse_number(name)) return {number, ""};
  if (auto named = service_port(name)) return {named, ""};
  if (auto elsewhere = non_tcp_service(name)) {
    return {std::nullopt,
            fmt::format("'{}' is not a TCP service: /etc/services lists it as {} only, and "
                        "tcpkit port explains TCP ports",
                        printable(text), *elsewhere)};
  }
  return {std::nullopt,
          fmt::format("'{}' is not a TCP port: give a whole number from 0 to 65535, a service name "
                      "from /etc/services (http), or a Unix socket: unix:PATH",
                      printable(text))};
}

// "unix:PATH", or a path with a slash in it ("/tmp/a.sock", "./a.sock"):
// a Unix socket rather than a port number.
std::optional<std::string> unix_socket_path(const std::string& text) {
  if (Endpoint::names_unix_socket(text)) return text.substr(Endpoint::kUnixPrefix.size());
  if (text.find('/') != std::string::npos && protocol_of(text).empty()) return text;
  return std::nullopt;
}

std::string validate_port(std::string& text) {
  if (auto path = unix_socket_path(text)) {
    if (path->empty() || *path == "@") {
      return fmt::format(
          "the socket path is missing in '{}': give unix:PATH (unix:@NAME for an abstract socket)",
          printable(text));
    }
    auto socket = Endpoint::unix_socket(*path);
    if (socket) return "";
    return fmt::format("'{}' is not a Unix socket path: {}", printable(text),
                       socket.error().message());
  }
  return parse_port(text).error;
}

const char* range_name(uint16_t port) {
  if (port <= 1023) return "well-known";
  if (port <= 49151) return "registered";
  return "dynamic";
}

PortReport gather_report(uint16_t port) {
  PortReport report;
  report.port = port;
  report.service = service_name(port);
  report.services_file = services_file_readable();
  report.range = range_name(port);
  report.ephemeral_range = ephemeral_port_range();
  const bool in_range = report.ephemeral_range && port >= report.ephemeral_range->low &&
                        port <= report.ephemeral_range->high;
  report.reserved = in_range && reserved_local_port(port);
  report.ephemeral = in_range && !report.reserved;
  report.unprivileged_start = unprivileged_port_start();
  report.listeners = find_listeners(port);
  report.states = count_states(port);
  return report;
}

// Whether binding the port needs root or CAP_NET_BIND_SERVICE: below
// ip_unprivileged_port_start, which is 1024 unless the machine (a
// container, often) says otherwise. Empty when /proc does not say.
std::optional<bool> bind_needs_privilege(const PortReport& r) {
  if (r.port == 0) return false;  // the kernel picks a free port, from the ephemeral range
  if (!r.unprivileged_start) return std::nullopt;
  return r.port < *r.unprivileged_start;
}

std::string range_sentence(const PortReport& r) {
  if (r.port == 0)
    return "0 is not a real port: binding to port 0 asks the kernel to pick a free one.";
  const std::optional<bool> privileged = bind_needs_privilege(r);
  const bool usual = !r.unprivileged_start || *r.unprivileged_start == 1024;
  const std::string here =
      usual ? std::string()
            : fmt::format(" (ip_unprivileged_port_start is {})", *r.unprivileged_start);
  if (r.range == std::string_view("well-known")) {
    if (privileged.value_or(true)) {
      return "well-known (0-1023): kept for standard services; binding one needs root or "
             "CAP_NET_BIND_SERVICE" +
             here + ".";
    }
    return "well-known (0-1023): kept for standard services; on this machine any user may bind "
           "it" +
           here + ".";
  }
  if (r.range == std::string_view("registered")) {
    if (!privileged.value_or(false))
      return "registered (1024-49151): ordinary servers use these; any user may bind one.";
    return "registered (1024-49151): ordinary servers use these; on this machine binding it "
           "needs root or CAP_NET_BIND_SERVICE" +
           here + ".";
  }
  if (!privileged.value_or(false))
    return "dynamic/private (49152-65535): never assigned to a service.";
  return "dynamic/private (49152-65535): never assigned to a service; on this machine binding "
         "it needs root or CAP_NET_BIND_SERVICE" +
         here + ".";
}

std::string ephemeral_sentence(const PortReport& r) {
  if (!r.ephemeral_range) return "unknown (/proc/sys/net/ipv4/ip_local_port_range is not readable)";
  const auto [low, high] = *r.ephemeral_range;
  if (r.reserved) {
    return fmt::format(
        "no: inside {}-{} (ip_local_port_range), but reserved (ip_local_reserved_ports), so the "
        "kernel never picks it for a client",
        low, high);
  }
  if (!r.ephemeral) return fmt::format("no (this machine's ephemeral range is {}-{})", low, high);
  return fmt::format(
      "yes, inside {}-{} (ip_local_port_range): the kernel picks clients' local ports from here, "
      "so an "
      "outgoing connection may already be using it",
      low, high);
}

void print_header(const PortReport& r) {
  fmt::print("Port {}/tcp\n", r.port);
  if (r.service && r.services_file) {
    fmt::print("  service:   {}\n", *r.service);
  } else if (r.service) {
    fmt::print("  service:   {} (from tcpkit's built-in table: /etc/services is absent)\n",
               *r.service);
  } else if (r.services_file) {
    fmt::print("  service:   none listed in /etc/services\n");
  } else {
    fmt::print(
        "  service:   unknown (/etc/services is absent; only the tutorial's ports are known)\n");
  }
  fmt::print("  range:     {}\n", range_sentence(r));
  fmt::print("  ephemeral: {}\n", ephemeral_sentence(r));
}

void print_listeners(const PortReport& r) {
  if (r.listeners.empty()) {
    fmt::print("\nnobody is listening on port {}\n", r.port);
    return;
  }
  fmt::print("\nListening (state LISTEN):\n");
  for (const auto& l : r.listeners) {
    std::string owner = l.owner ? fmt::format("pid {} ({})", l.owner->pid, printable(l.owner->name))
                                : std::string("unknown (try as root)");
    // "[::]" alone does not say whether IPv4 clients reach the socket too.
    if (!l.dual_stack) {
      owner += "; IPv6, and IPv4 unless IPV6_V6ONLY is set (the kernel would not say)";
    } else if (*l.dual_stack) {
      owner += "; IPv4 too (dual-stack: IPV6_V6ONLY off)";
    } else if (l.address.starts_with("[::]:")) {
      owner += "; IPv6 only (IPV6_V6ONLY)";
    }
    // A Unix socket's path is outside text: any user names a socket anything.
    fmt::print("  {:<24} {}\n", printable(l.address), owner);
  }
}

void print_states(const PortReport& r) {
  if (r.states.empty()) {
    fmt::print("\nno connections on port {}\n", r.port);
    return;
  }
  fmt::print(
      "\nConnections on port {} (a connection between two programs on this machine counts once per "
      "end):\n",
      r.port);
  for (const char* state : kStateOrder) {
    if (auto it = r.states.find(state); it != r.states.end())
      fmt::print("  {:<12} {}\n", state, it->second);
  }
  if (r.states.contains("TIME_WAIT")) fmt::print("\n{}\n", kTimeWaitNote);
  if (r.states.contains("CLOSE_WAIT")) fmt::print("\n{}\n", kCloseWaitNote);
}

Json json_listener(const ListeningSocket& l) {
  Json process = l.owner ? Json(l.owner->name) : Json(nullptr);
  Json pid = l.owner ? Json(l.owner->pid) : Json(nullptr);
  Json listener = {{"address", l.address}, {"inode", l.inode}, {"pid", pid}, {"process", process}};
  // IPv4 or IPv6: whether an IPv6 socket takes IPv4 clients too.
  if (!Endpoint::names_unix_socket(l.address))
    listener["dual_stack"] = l.dual_stack ? Json(*l.dual_stack) : Json(nullptr);
  return listener;
}

void print_json(const PortReport& r) {
  Json listeners = Json::array();
  for (const auto& l : r.listeners) listeners.push_back(json_listener(l));
  Json states = Json::object();
  for (const auto& [state, count] : r.states) states[state] = count;
  Json ephemeral_range = nullptr;
  if (r.ephemeral_range) ephemeral_range = {r.ephemeral_range->low, r.ephemeral_range->high};
  const std::optional<bool> needs_privilege = bind_needs_privilege(r);
  Json privileged = needs_privilege ? Json(*needs_privilege) : Json(nullptr);
  Json report = {{"port", r.port},
                 {"service", r.service ? Json(*r.service) : Json(nullptr)},
                 {"services_file", r.services_file},
                 {"range", r.range},
                 {"bind_needs_privilege", privileged},
                 {"ephemeral", r.ephemeral},
                 {"ephemeral_range", ephemeral_range},
                 {"reserved", r.reserved},
                 {"listening", !r.listeners.empty()},
                 {"listeners", listeners},
                 {"states", states}};
  fmt::print("{}\n", json_text(report));
}

// What a socket file at `path` is, for the reader who wonders why a file
// is there: "a socket file", "no file", "not a socket".
std::string file_sentence(const std::string& path) {
  if (path.starts_with("@"))
    return "none: an abstract socket has no file; it goes with its last socket";
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "no such file";
  if (!S_ISSOCK(st.st_mode)) return "exists, and is not a socket";
  return fmt::format("a socket file, mode {:03o} (write permission lets a process connect)",
                     st.st_mode & 0777);
}

// What connect() says about a socket the kernel lists no listener for.
// The table holds the path as the server spelled it (relative to its own
// directory, say), so a miss there proves nothing: only a refused
// connection shows that the file is stale.
enum class Probe { accepted, refused, absent, unknown };
struct ProbeResult {
  Probe probe = Probe::absent;
  std::string reason;  // for unknown: why connect() failed
};

ProbeResult probe_unix_socket(const std::string& path) {
  const bool abstract = path.starts_with("@");
  struct stat st {};
  if (!abstract && (::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode))) return {};
  auto endpoint = Endpoint::unix_socket(path);
  if (!endpoint) return {Probe::unknown, endpoint.error().code().message()};
  auto stream = TcpStream::connect(*endpoint, std::chrono::seconds(1));
  if (stream) return {Probe::accepted, ""};
  if (stream.error() == std::errc::connection_refused) return {Probe::refused, ""};
  if (stream.error() == std::errc::no_such_file_or_directory) return {};
  return {Probe::unknown, stream.error().code().message()};
}

void print_unix_nobody(const std::string& path, const std::string& raw_address,
                       const ProbeResult& probe) {
  const std::string address = printable(raw_address);
  switch (probe.probe) {
    case Probe::accepted:
      fmt::print(
          "\na server is listening on {} (connect() succeeds), but the kernel's socket table does "
          "not "
          "list it under this name (it was bound under another spelling, e.g. a relative "
          "path), so its process is unknown\n",
          address);
      return;
    case Probe::refused:
      fmt::print("\nnobody is listening on {}{}\n", address,
                 path.starts_with("@") ? ""
                                       : " (the file is stale: its server is gone; "
                                         "tcpkit serve replaces it)");
      return;
    case Probe::absent:
      fmt::print("\nnobody is listening on {}\n", address);
      return;
    case Probe::unknown:
      fmt::print(
          "\nno listener on {} in the kernel's socket table, and connect() cannot tell whether one "
          "is "
          "there: {}\n",
          address, printable(probe.reason));
      return;
  }
}

int run_unix_socket(const std::string& path, bool json) {
  const std::string address = std::string(Endpoint::kUnixPrefix) + path;
  const UnixSocketUsage usage = find_unix_socket(path);
  ProbeResult probe{usage.listeners.empty() ? Probe::absent : Probe::accepted, ""};
  if (usage.listeners.empty() && usage.datagram.empty()) probe = probe_unix_socket(path);
  if (json) {
    Json listeners = Json::array();
    for (const auto& l : usage.listeners) listeners.push_back(json_listener(l));
    Json datagram = Json::array();
    for (const auto& d : usage.datagram) datagram.push_back(json_listener(d));
    const Json report = {{"unix", address},
                         {"listening", probe.probe == Probe::accepted},
                         {"listeners", listeners},
                         {"connections", usage.connections},
                         {"datagram", datagram}};
    fmt::print("{}\n", json_text(report));
    return kExitOk;
  }
  fmt::print("Unix socket {}\n", printable(address));
  fmt::print("  file:      {}\n", file_sentence(path));
  PortReport listening;
  listening.listeners = usage.listeners;
  if (!usage.datagram.empty()) {
    fmt::print(
        "\nA datagram socket (SOCK_DGRAM) is bound there: it receives what clients send() to it, "
        "without listening or connections:\n");
    for (const auto& d : usage.datagram) {
      std::string owner = d.owner
                              ? fmt::format("pid {} ({})", d.owner->pid, printable(d.owner->name))
                              : std::string("unknown (try as root)");
      fmt::print("  {:<24} {}\n", printable(d.address), owner);
    }
  }
  if (usage.listeners.empty() && usage.datagram.empty()) {
    print_unix_nobody(path, address, probe);
  } else if (!usage.listeners.empty()) {
    print_listeners(listening);
  }
  fmt::print("\nConnections open: {}\n", usage.connections);
  return kExitOk;
}

int run_port(const PortOptions& options) {
  if (auto path = unix_socket_path(options.port_text)) return run_unix_socket(*path, options.json);
  // The validator has already accepted the text, so this parse succeeds.
  auto report = gather_report(*parse_port(options.port_text).port);
  if (options.json) {
    print_json(report);
    return kExitOk;
  }
  print_header(report);
  print_listeners(report);
  print_states(report);
  return kExitOk;
}

}  // namespace

Command add_port_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "port",
      "Explain a TCP port: who listens, connection states, service name (or a Unix socket)");
  auto options = std::make_shared<PortOptions>();
  sub->add_option(
         "PORT", options->port_text,
         "port number, 0 to 65535, or a service name from /etc/services (http), either with or "
         "without /tcp; or a Unix socket: unix:PATH (unix:@NAME), or a PATH with a '/'")
      ->required()
      ->check(CLI::Validator(validate_port, "PORT", "port"));
  sub->add_flag("--json", options->json, "print the same facts as one JSON object");
  return {sub, [options] { return run_port(*options); }};
}

}  // namespace tcpkit::cli

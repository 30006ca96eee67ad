// `tcpkit bench`: a load generator with the ping-pong method the peers
// publish, a connection-rate test and a one-way stream; text or JSON report.
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>

#include "bench/bench_runner.h"
#include "commands.h"
#include "common/cli_common.h"
#include "common/json_writer.h"
#include "common/logger.h"
#include "tcpkit/tcp_stream.h"

namespace tcpkit::cli {
namespace {

const char* to_string(BenchMode m) {
  switch (m) {
    case BenchMode::pingpong:
      return "pingpong";
    case BenchMode::connrate:
      return "connrate";
    case BenchMode::stream:
      return "stream";
  }
  return "?";
}

std::string kernel_release() {
  utsname u{};
  if (::uname(&u) != 0) return "unknown";
  return fmt::format("{} {}", u.sysname, u.release);
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

// The signal that interrupted a run, by the name kill(1) takes.
std::string signal_name(int signo) {
  switch (signo) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    default:
      return fmt::format("signal {}", signo);
  }
}

// A server stalled when a message it still owed at the end had waited for
// half the measured window or more: the figures then describe at most the
// first half of the run.
bool stalled(const BenchResult& r) {
  return r.unanswered > 0 && static_cast<double>(r.oldest_unanswered_ns) / 1e9 >= r.seconds / 2;
}

double us(uint64_t nanos) {
  return static_cast<double>(nanos) / 1000.0;
}

struct Figures {
  double mib_per_s;
  double msgs_per_s;
  uint64_t data_errors;
};

Figures figures_of(const BenchResult& r) {
  double secs = r.seconds > 0 ? r.seconds : 1;
  return {static_cast<double>(r.bytes) / (1024.0 * 1024.0) / secs,
          static_cast<double>(r.messages) / secs, r.mismatched_bytes + r.lost_bytes};
}

// A byte as a reader can tell it: its value, and the character if printable.
std::string byte_text(int byte) {
  if (byte >= 0x20 && byte < 0x7f)
    return fmt::format("0x{:02x} '{}'", byte, static_cast<char>(byte));
  return fmt::format("0x{:02x}", byte);
}

std::string mismatch_text(const Mismatch& m) {
  std::string s = fmt::format("connection {}, stream byte {}: ", m.connection, m.offset);
  if (m.expected < 0) return s + fmt::format("got {}, beyond what was sent", byte_text(m.got));
  s += fmt::format("expected {}, got {}", byte_text(m.expected), byte_text(m.got));
  if (m.shift > 0) {
    s += fmt::format(
        "; from there on the stream continues {} byte(s) further on: {} byte(s) missing", m.shift,
        m.shift);
  } else if (m.shift < 0) {
    s += fmt::format("; from there on the stream resumes {} byte(s) back: {} byte(s) repeated",
                     -m.shift, -m.shift);
  }
  return s;
}

// What connrate sends per connection, whatever --size says.
size_t message_size(const BenchOptions& o) {
  return o.mode == BenchMode::connrate ? 1 : o.size;
}

std::string text_report(const BenchOptions& o, const BenchResult& r, const std::string& target) {
  Figures f = figures_of(r);
  const std::string clamped =
      r.threads < o.threads ? fmt::format(" (of {} asked: one per connection at most)", o.threads)
                            : "";
  std::string s = fmt::format(
      "tcpkit bench {} {}: {} connection(s), {} byte(s), {} thread(s){}, {:.2f} s\n",
      to_string(o.mode), target, o.conns, message_size(o), r.threads, clamped, r.seconds);
  if (o.mode == BenchMode::connrate) {
    s += fmt::format("  connections/s  {:.0f}  ({} exchanges)\n", f.msgs_per_s, r.messages);
    s += "  connect latency (us)";
  } else {
    s += fmt::format("  throughput     {:.2f} MiB/s  {:.0f} msg/s  ({} messages)\n", f.mib_per_s,
                     f.msgs_per_s, r.messages);
    if (o.mode == BenchMode::pingpong) s += "  round trip (us)";
  }
  if (o.mode != BenchMode::stream) {
    const auto& h = r.latency;
    s += fmt::format("  p50 {:.1f}  p90 {:.1f}  p99 {:.1f}  p99.9 {:.1f}  max {:.1f}\n",
                     us(h.percentile(50)), us(h.percentile(90)), us(h.percentile(99)),
                     us(h.percentile(99.9)), us(h.max()));
  }
  s += fmt::format(
      "  errors         mismatched bytes {}, lost bytes {}, refused {}, reset {}, connect failed "
      "{}\n",
      r.mismatched_bytes, r.lost_bytes, r.refused, r.reset, r.connect_failed);
  if (r.first_mismatch) s += fmt::format("  first mismatch {}\n", mismatch_text(*r.first_mismatch));
  if (!r.connect_error.empty())
    s += fmt::format("  connect error  {} (the first)\n", r.connect_error);
  if (!r.close_error.empty()) s += fmt::format("  reset          {} (the first)\n", r.close_error);
  // Every run ends with messages in flight (JSON: unanswered); they are
  // worth a line when the server stalled.
  if (stalled(r) && o.mode == BenchMode::stream) {
    s += fmt::format("  untaken        {} message(s) at the end, the oldest queued for {:.3f} s\n",
                     r.unanswered, static_cast<double>(r.oldest_unanswered_ns) / 1e9);
  } else if (stalled(r)) {
    s += fmt::format(
        "  unanswered     {} message(s) at the end, the oldest for {:.3f} s (counted in the "
        "round trips as that long)\n",
        r.unanswered, static_cast<double>(r.oldest_unanswered_ns) / 1e9);
  }
  if (o.rate > 0) {
    s += fmt::format("  open loop      {:g} msg/s asked; {}\n", o.rate,
                     r.missed_sends == 0
                         ? "every message sent when due"
                         : fmt::format("{} due not sent (the server fell behind)", r.missed_sends));
  }
  if (o.tls) {
    s += fmt::format("  tls            handshakes failed {}{}\n", r.tls_failed,
                     r.tls_error.empty() ? "" : fmt::format(" (first: {})", r.tls_error));
  }
  if (o.busy_poll_us > 0) {
    s += fmt::format("  busy poll      {} us before each sleep; {:.2f} s spent spinning idle\n",
                     o.busy_poll_us, r.busy_poll_idle_s);
  }
  if (o.mode != BenchMode::connrate && r.connected_at_start < o.conns) {
    s += fmt::format("  only {} of {} connections were up when measuring began\n",
                     r.connected_at_start, o.conns);
  }
  if (r.interrupted_by != 0) {
    s += fmt::format("  interrupted    by {} after {:.2f} of {:g} s\n",
                     signal_name(r.interrupted_by), r.seconds, o.duration_s);
  }
  return s;
}

Json mismatch_json(const std::optional<Mismatch>& m) {
  if (!m) return nullptr;
  return {{"connection", m->connection},
          {"offset", m->offset},
          {"expected", m->expected < 0 ? Json(nullptr) : Json(m->expected)},
          {"got", m->got},
          {"shift", m->shift}};
}

std::string json_report(const BenchOptions& o, const BenchResult& r, const std::string& args) {
  Figures f = figures_of(r);
  const auto& h = r.latency;
  // Rates rounded as the text report shows them; the rest exact.
  const auto rounded = [](double value, double scale) { return std::round(value * scale) / scale; };
  Json report = {
      {"mode", to_string(o.mode)},
      {"conns", o.conns},
      {"size", message_size(o)},
      {"threads", r.threads},
      {"threads_requested", o.threads},
      {"rate", o.rate},
      {"missed_sends", r.missed_sends},
      {"unanswered", r.unanswered},
      {"oldest_unanswered_us", rounded(us(r.oldest_unanswered_ns), 100)},
      {"interrupted", r.interrupted_by == 0 ? Json(nullptr) : Json(signal_name(r.interrupted_by))},
      {"duration_s", rounded(r.seconds, 1000)},
      {"messages", r.messages},
      {"bytes", r.bytes},
      {"mib_per_s", rounded(f.mib_per_s, 1000)},
      {"msgs_per_s", rounded(f.msgs_per_s, 10)},
      {"connections", r.connections},
      {"connections_per_s", o.mode == BenchMode::connrate ? rounded(f.msgs_per_s, 10) : 0.0},
      {"connected_at_start", r.connected_at_start},
      {"latency_us",
       {{"p50", rounded(us(h.percentile(50)), 100)},
        {"p90", rounded(us(h.percentile(90)), 100)},
        {"p99", rounded(us(h.percentile(99)), 100)},
        {"p999", rounded(us(h.percentile(99.9)), 100)},
        {"max", rounded(us(h.max()), 100)}}},
      {"errors",
       {{"mismatched_bytes", r.mismatched_bytes},
        {"lost_bytes", r.lost_bytes},
        {"refused", r.refused},
        {"reset", r.reset},
        {"connect_failed", r.connect_failed},
        {"tls_failed", r.tls_failed}}},
      {"first_mismatch", mismatch_json(r.first_mismatch)},
      {"connect_error", r.connect_error.empty() ? Json(nullptr) : Json(r.connect_error)},
      {"close_error", r.close_error.empty() ? Json(nullptr) : Json(r.close_error)},
      {"tls", o.tls != nullptr},
      {"busy_poll_us", o.busy_poll_us},
      {"busy_poll_idle_s", rounded(r.busy_poll_idle_s, 1000)},
      {"host", host_name()},
      {"kernel", kernel_release()},
      {"compiler", "g++ " __VERSION__},
      {"args", args}};
  return json_text(report) + "\n";
}

struct BenchFlags {
  BenchOptions bench;
  std::string mode = "pingpong";
  bool tls = false;
  std::string tls_ca;
  bool insecure = false;
  std::string sni;
  std::string format = "text";
  std::string output;
  std::string args;
  std::string unix_path;  // --unix PATH
  std::string port_text;  // PORT, checked by port_to_connect_to()
  CLI::Option* port_opt = nullptr;
};

// After finite_number: 0 (the closed loop) or a rate in [kMinRate, kMaxRate].
std::string validate_rate(std::string& text) {
  const double rate = std::strtod(text.c_str(), nullptr);
  if (rate == 0 || (rate >= kMinRate && rate <= kMaxRate)) return "";
  return fmt::format(
      "'{}' is out of range: give 0 (the closed loop) or from {:g} to {:g} messages per second",
      text, kMinRate, kMaxRate);
}

// Writes the whole report and closes `out`; the reason when any of it failed.
std::string write_report(std::FILE* out, const std::string& report) {
  const bool wrote = std::fwrite(report.data(), 1, report.size(), out) == report.size() &&
                     std::fflush(out) == 0 && std::ferror(out) == 0;
  const int error = errno;
  const bool closed = out == stdout || std::fclose(out) == 0;
  if (wrote && closed) return "";
  return std::strerror(wrote ? errno : error);
}

// Descriptors the run needs besides its connections: the standard ones,
// the report's file, and each thread's loop (epoll or io_uring, its wake-up
// and timer descriptors), with room to spare.
constexpr rlim_t kSpareDescriptors = 32;
constexpr rlim_t kDescriptorsPerThread = 8;

// Raises the soft limit on open files as far as the connections need and
// the hard limit allows, as a load generator must (one descriptor per
// connection); returns the limit the run has.
rlim_t raise_descriptor_limit(const BenchOptions& o) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return RLIM_INFINITY;
  const rlim_t threads = static_cast<rlim_t>(std::max(1, std::min(o.threads, o.conns)));
  const rlim_t needed =
      static_cast<rlim_t>(o.conns) + kSpareDescriptors + threads * kDescriptorsPerThread;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? needed : std::min(needed, limit.rlim_max);
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur;
}

// The exit status of a run whose report is written, and on standard error
// why it is not 0.
int verdict(const BenchOptions& o, const BenchResult& r, const Endpoint& target,
            rlim_t descriptors) {
  if (r.missed_sends > 0) {
    fmt::print(stderr,
               "tcpkit bench: the server fell behind: {} message(s) due were not sent (each "
               "connection holds at most {} MiB unsent and {} messages unanswered)\n",
               r.missed_sends, kMaxUnsentBytes >> 20, kMaxInFlight);
  }
  if (r.connections == 0 && r.tls_failed > 0) {
    fmt::print(stderr, "tcpkit bench: every TLS handshake failed: {}\n", r.tls_error);
    return kExitFailure;
  }
  // Whether any connection was ever up, during the connect phase or after.
  if (r.connections == 0) {
    if (r.interrupted_by != 0) return kExitFailure;
    if (o.tls && r.refused + r.connect_failed == 0) {
      fmt::print(stderr, "tcpkit bench: no TLS handshake with {} completed — is it a TLS server?\n",
                 target.to_string());
    } else {
      fmt::print(stderr,
                 "tcpkit bench: no connection to {} succeeded (refused {}, failed {}{}) — is a "
                 "server running?\n",
                 target.to_string(), r.refused, r.connect_failed,
                 r.connect_error.empty() ? "" : fmt::format("; first: {}", r.connect_error));
    }
    return kExitFailure;
  }
  bool failed = false;
  // Some connections came up and others did not: the figures are those of
  // fewer connections than asked (pingpong, stream), or of a server that
  // turned clients away (connrate).
  if (const uint64_t attempts = r.refused + r.connect_failed + r.tls_failed; attempts > 0) {
    std::string first = !r.connect_error.empty() ? r.connect_error : r.tls_error;
    if (r.connect_error == std::strerror(EMFILE)) {
      first += fmt::format(" (the limit is {} open files: raise ulimit -n, or fewer --conns)",
                           descriptors);
    }
    fmt::print(stderr,
               "tcpkit bench: {} connection attempt(s) failed (refused {}, failed {}, TLS "
               "handshakes failed {}){}\n",
               attempts, r.refused, r.connect_failed, r.tls_failed,
               first.empty() ? "" : fmt::format("; the first: {}", first));
    failed = true;
  }
  if (r.mismatched_bytes + r.lost_bytes > 0) {
    fmt::print(stderr, "tcpkit bench: data errors: {} mismatched and {} lost bytes{}\n",
               r.mismatched_bytes, r.lost_bytes,
               r.first_mismatch
                   ? fmt::format(" (first mismatch: {})", mismatch_text(*r.first_mismatch))
                   : "");
    failed = true;
  }
  if (r.reset > 0) {
    if (o.mode == BenchMode::connrate) {
      fmt::print(stderr,
                 "tcpkit bench: {} connection(s) closed before their byte was echoed (the "
                 "first: {})\n",
                 r.reset, r.close_error);
    } else {
      fmt::print(stderr, "tcpkit bench: {} of {} connection(s) closed mid-run (the first: {})\n",
                 r.reset, o.conns, r.close_error);
    }
    failed = true;
  }
  if (failed) return kExitFailure;
  if (r.messages == 0) {
    if (r.interrupted_by != 0) return kExitFailure;  // stopped before anything came
    // Connected, yet nothing to report: say why the exit status is 1.
    fmt::print(stderr, "tcpkit bench: {} in {:.2f} s — {}\n",
               o.mode == BenchMode::stream     ? "no message was written"
               : o.mode == BenchMode::pingpong ? "no echo came back"
                                               : "no connection got its byte echoed",
               r.seconds,
               o.mode == BenchMode::stream ? "is the server reading?"
                                           : "is it an echo server (tcpkit serve --mode echo)?");
    return kExitFailure;
  }
  if (stalled(r) && o.mode == BenchMode::stream) {
    fmt::print(stderr,
               "tcpkit bench: the server stopped reading: {} message(s) not all taken at the end, "
               "the oldest queued for {:.2f} of the {:.2f} s measured\n",
               r.unanswered, static_cast<double>(r.oldest_unanswered_ns) / 1e9, r.seconds);
    return kExitFailure;
  }
  if (stalled(r)) {
    fmt::print(stderr,
               "tcpkit bench: the server stopped answering: {} message(s) unanswered at the end, "
               "the oldest for {:.2f} of the {:.2f} s measured\n",
               r.unanswered, static_cast<double>(r.oldest_unanswered_ns) / 1e9, r.seconds);
    return kExitFailure;
  }
  return kExitOk;
}

// A name with several addresses (localhost: ::1 and 127.0.0.1) is measured
// at the first of them that takes a connection, as wrk picks its address
// and connect tries them in turn; the probe's connection is closed at once.
// With one address, or none that answers, the first is used, and the run
// reports what fails there.
Endpoint pick_target(const std::vector<Endpoint>& targets, double connect_timeout_s) {
  if (targets.size() == 1) return targets.front();
  for (const Endpoint& candidate : targets) {
    if (auto probe = TcpStream::connect(candidate, to_millis(connect_timeout_s))) return candidate;
  }
  return targets.front();
}

int run_bench(BenchFlags& flags) {
  BenchOptions& o = flags.bench;
  // One target: HOST PORT, HOST = unix:PATH, or --unix PATH.
  if (!flags.unix_path.empty()) {
    if (!o.host.empty()) {
      fmt::print(stderr,
                 "tcpkit bench: --unix {} and HOST '{}' both name a target: give one of them\n",
                 flags.unix_path, o.host);
      return kExitUsage;
    }
    o.host = unix_address(flags.unix_path);
  }
  const bool unix_target = Endpoint::names_unix_socket(o.host);
  const bool has_port = flags.port_opt->count() > 0;
  if (has_port) o.port = *Endpoint::parse_port(flags.port_text);
  if (o.host.empty() || unix_target == has_port) {
    fmt::print(stderr, "tcpkit bench: {}\n",
               unix_target
                   ? "a Unix socket has no PORT: give unix:PATH (or --unix PATH) alone"
                   : "HOST and PORT are required (or a Unix socket: unix:PATH, --unix PATH)");
    return kExitUsage;
  }
  if (o.rate > 0 && o.mode != BenchMode::pingpong) {
    fmt::print(stderr,
               "tcpkit bench: --rate paces pingpong only; --mode {} sends as fast as it can "
               "(leave --rate out)\n",
               to_string(o.mode));
    return kExitUsage;
  }
  auto targets = unix_target ? Endpoint::resolve(o.host) : Endpoint::resolve(o.host, o.port);
  if (!targets) {
    // The error's own message names the host again: the reason alone, as
    // connect gives it.
    const std::error_code& code = targets.error().code();
    fmt::print(stderr, "tcpkit bench: cannot resolve '{}': {}\n", o.host,
               code == Errc::name_not_found
                   ? "no such host (check the spelling, or give an IP address)"
                   : code.message());
    return kExitFailure;
  }
  const Endpoint target = pick_target(*targets, o.connect_timeout_s);
  if (flags.tls) {
    // Read before connecting, so a wrong --tls-ca is the one clear error.
    auto context =
        TlsContext::client({flags.tls_ca, !flags.insecure, tls_server_name(o.host, flags.sni)});
    if (!context) {
      fmt::print(stderr, "tcpkit bench: --tls-ca: {}\n", context.error().message());
      return kExitFailure;
    }
    o.tls = std::make_shared<const TlsContext>(std::move(*context));
  }
  // More connections than open files allowed: most connects would fail,
  // after a run that only wastes time, so say so at once.
  const rlim_t descriptors = raise_descriptor_limit(o);
  if (static_cast<rlim_t>(o.conns) >= descriptors) {
    fmt::print(stderr,
               "tcpkit bench: --conns {} needs a file descriptor per connection, but this process "
               "may open {} files at most (ulimit -n, and the hard limit ulimit -Hn): raise "
               "the limit, or give fewer --conns\n",
               o.conns, descriptors);
    return kExitFailure;
  }
  // The report's file is opened before the run, so that a path that cannot
  // be written fails at once rather than after the whole run.
  std::FILE* out = stdout;
  if (!flags.output.empty()) {
    out = std::fopen(flags.output.c_str(), "w");
    if (out == nullptr) {
      fmt::print(stderr, "tcpkit bench: cannot write --output '{}': {}\n", flags.output,
                 std::strerror(errno));
      return kExitFailure;
    }
  }
  o.live = flags.output.empty() && ::isatty(STDERR_FILENO);
  BenchRunner runner(o, target);
  auto run = runner.run();
  if (!run) {
    fmt::print(stderr, "tcpkit bench: cannot start: {}\n", run.error().message());
    if (out != stdout) std::fclose(out);
    return kExitFailure;
  }
  const BenchResult& r = *run;
  std::string report = flags.format == "json" ? json_report(o, r, flags.args)
                                              : text_report(o, r, target.to_string());
  if (const std::string why = write_report(out, report); !why.empty()) {
    fmt::print(stderr, "tcpkit bench: cannot write the report to {}: {}\n",
               flags.output.empty() ? std::string("standard output")
                                    : fmt::format("--output '{}'", flags.output),
               why);
    return kExitFailure;
  }
  const int status = verdict(o, r, target, descriptors);
  if (r.interrupted_by != 0) {
    // As a shell reports a command a signal ended: the run is incomplete.
    fmt::print(stderr, "tcpkit bench: interrupted by {} after {:.2f} of {:g} s\n",
               signal_name(r.interrupted_by), r.seconds, o.duration_s);
    return 128 + r.interrupted_by;
  }
  return status;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto* sub = app.add_subcommand("bench",
                                 "Load-test a TCP echo/discard server: pingpong, connrate, stream");
  auto flags = std::make_shared<BenchFlags>();
  static const std::map<std::string, BenchMode> kModes{{"pingpong", BenchMode::pingpong},
                                                       {"connrate", BenchMode::connrate},
                                                       {"stream", BenchMode::stream}};
  BenchOptions& o = flags->bench;
  sub->add_option("HOST", o.host, "server address or name, or unix:PATH (then no PORT)");
  flags->port_opt = sub->add_option("PORT", flags->port_text, "server port, 1 to 65535")
                        ->check(port_to_connect_to());
  add_unix_flag(*sub, flags->unix_path,
                "load-test the server on this Unix-domain socket instead of HOST PORT");
  // Names, not numbers: an enum transformer would also take "2" for stream.
  sub->add_option(
         "--mode", flags->mode,
         "pingpong: echo round trips; connrate: connect, 1 byte echoed, close; stream: one-way")
      ->transform(CLI::IsMember({"pingpong", "connrate", "stream"}, CLI::ignore_case))
      ->capture_default_str();
  sub->add_option("-c,--conns", o.conns, "connections at once")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  sub->add_option("-s,--size", o.size, "message size in bytes")
      ->check(CLI::Range(1, 64 * 1024 * 1024))
      ->capture_default_str();
  sub->add_option("-d,--duration", o.duration_s, "seconds to measure")
      ->check(seconds(0.001))
      ->capture_default_str();
  sub->add_option("-t,--threads", o.threads, "client threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  sub->add_option("-r,--rate", o.rate,
                  "pingpong: messages/s over all connections (open loop, 0.001 to 1e8): each "
                  "connection sends on its own schedule and latency counts from it; while a "
                  "connection holds 1 MiB unsent or 65536 messages unanswered, the messages due "
                  "are not sent and are reported as missed; 0: as fast as echoes return")
      ->check(CLI::NonNegativeNumber)
      ->check(finite_number());
  sub->add_option("--connect-timeout", o.connect_timeout_s, "seconds")
      ->check(seconds(0.001))
      ->capture_default_str();
  sub->add_option("--format", flags->format, "text | json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  sub->add_option("-o,--output", flags->output, "write the report to FILE");
  auto* tls = sub->add_flag("--tls", flags->tls,
                            "speak TLS (a connection counts once its handshake is done)");
  auto* tls_ca = sub->add_option("--tls-ca", flags->tls_ca,
                                 "with --tls: trust the CA certificates in this PEM file")
                     ->check(CLI::ExistingFile)
                     ->needs(tls);
  sub->add_flag("--insecure", flags->insecure, "with --tls: accept any certificate for any name")
      ->needs(tls)
      ->excludes(tls_ca);
  sub->add_option("--sni", flags->sni,
                  "with --tls: the server name to send and verify (default: HOST)")
      ->needs(tls);
  sub->add_option("--busy-poll", o.busy_poll_us,
                  "microseconds each client thread looks for events without sleeping before it "
                  "sleeps: quicker to answer, but the thread keeps its core busy; 0: sleep at once")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  add_io_backend_flag(*sub, o.io_backend);
  // After --rate's own checks, which say what is not a number.
  sub->get_option("--rate")->check(CLI::Validator(validate_rate, "RATE", "rate"));
  return {sub, [flags, sub] {
            flags->args.clear();
            for (const auto& opt : sub->get_options()) {
              if (opt->count() == 0 || opt->get_name() == "--help") continue;
              flags->args += fmt::format("{}{}={}", flags->args.empty() ? "" : " ", opt->get_name(),
                                         opt->as<std::string>());
            }
            flags->bench.mode = kModes.at(flags->mode);
            return run_bench(*flags);
          }};
}

}  // namespace tcpkit::cli

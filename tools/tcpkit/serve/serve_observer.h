// ServeObserver: what happens to the connections of `tcpkit serve`, told once
// and counted once. Every stage reports its events here (connected,
// admitted, refused, handshake, message, closed); the observer keeps the one
// set of counters (ServeCounters) and feeds from it the log lines, the
// Prometheus metrics, the list of open clients behind /clients.json and the
// status page, and the summary a stopping server prints.
//
// Owned by ServeApp. Events come from every I/O loop at once: counting is
// atomic, the client list has its own lock, the logger writes whole lines.
// Events that take a connection run in that connection's loop thread (they
// read its ServeSession).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

#include "common/logger.h"
#include "serve/client_registry.h"
#include "serve/serve_metrics.h"
#include "tcpkit/callbacks.h"
#include "tcpkit/close_reason.h"
#include "tcpkit/endpoint.h"

namespace tcpkit::cli {

struct ServeSession;

// How a connection ended, in the observer's words.
struct CloseOutcome {
  std::string label;     // the metrics' reason: "peer closed", "bad PROXY header"
  std::string text;      // the log's: "peer closed the connection", "bad PROXY header (...)"
  bool error = false;    // also an error (tcpkit_errors_total)
  bool refusal = false;  // refused before it was served (tcpkit_refused_total)
};

// The outcome of a close: ours when we closed it (`session` says why), the
// server's drain while `stopping`, else the connection's typed reason
// (`code` Errc::tls_truncated with `kind` peer_closed: a TLS client's FIN
// came without its close_notify, a clean close that the log calls truncated).
// `handshake_timeout_s` is what the log line of a handshake timeout names.
// Without `with_text` the log's words of a close by the connection's own
// reason are left empty: with --quiet nobody reads them, and such a close
// formats nothing.
CloseOutcome close_outcome(CloseReason kind, std::error_code code, bool stopping,
                           const ServeSession* session, double handshake_timeout_s,
                           bool with_text = true);

class ServeObserver {
 public:
  struct Options {
    std::string mode;  // the metrics' `mode` label
    LogFormat log_format = LogFormat::text;
    bool quiet = false;  // no connection lines (the start and stop lines remain)
    double tls_handshake_timeout_s = 10;
  };

  explicit ServeObserver(Options options);

  Logger& log() { return log_; }
  bool logs_connections() const { return !options_.quiet; }
  // --metrics: keep the list of open clients (one entry each) for the status
  // page and the byte totals of a scrape. Before the first connection.
  void track_clients() { tracks_clients_ = true; }
  bool tracks_clients() const { return tracks_clients_; }

  // ---- events -------------------------------------------------------------

  // A client accepted and to be served; returns how many are open now.
  int64_t connected(const TcpConnectionPtr& conn);
  // Its address is known (the PROXY header's, or the socket's): the connect
  // line. `clients` is the open count the line shows.
  void admitted(const TcpConnectionPtr& conn, int64_t clients);
  // The server closed a connection before handing it on (--max-conns, an
  // --allow/--deny rule on the socket's peer).
  void refused(const Endpoint& peer, std::error_code why);
  // The connection is ready end to end; logs the TLS version, cipher and
  // server name when it speaks TLS.
  void handshake(const TcpConnectionPtr& conn);
  void message_received(uint64_t n = 1) { counters_.count_messages_received(n); }
  void message_sent(uint64_t n = 1) { counters_.count_messages_sent(n); }
  // The ack mode's log line of one message, `shown` already printable; or,
  // on a TLS connection, its size only.
  void message(const TcpConnectionPtr& conn, std::string_view shown);
  void encrypted_message(const TcpConnectionPtr& conn, size_t bytes);
  // The connection is gone: counts it by its outcome and logs the line.
  void closed(const TcpConnectionPtr& conn);
  // The first SIGINT/SIGTERM; connections closed from now on by us are
  // "server stopping".
  // Returns false when it was already stopping.
  bool stopping();
  // Every connection is gone: the summary line.
  void stopped();

  // ---- readers ------------------------------------------------------------

  const ServeCounters& counters() const { return counters_; }
  bool is_stopping() const { return stopping_.load(); }
  // The client's address as the log shows it: from the PROXY header if any.
  std::string peer_name(const TcpConnectionPtr& conn) const;
  std::string metrics_text() const;
  // `name_of` supplies the chat names, in UTF-8.
  std::string clients_json(
      const std::function<std::string(const TcpConnectionPtr&)>& name_of) const;

 private:
  const Options options_;
  Logger log_;
  ServeCounters counters_;
  ClientRegistry registry_;  // only with tracks_clients()
  bool tracks_clients_ = false;
  std::atomic<bool> stopping_{false};
};

}  // namespace tcpkit::cli

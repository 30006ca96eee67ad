#include "serve/serve_observer.h"

#include <fmt/core.h>

#include "common/text_escape.h"
#include "serve/serve_session.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tls_session.h"

namespace tcpkit::cli {

// The metrics label of a close: the connection's typed reason, or ours when
// we closed it; the log line's words start with the same label.
CloseOutcome close_outcome(CloseReason kind, std::error_code code, bool stopping,
                           const ServeSession* session, double handshake_timeout_s,
                           bool with_text) {
  CloseOutcome out;
  if (session != nullptr && session->rejected) {
    // Closed by us before it was served (an untrusted proxy, a client the
    // PROXY header names that --deny refuses): a refusal, not a disconnect.
    out.label = session->close_label;
    out.text = session->close_note;
    out.error = !session->refusal;
    out.refusal = session->refusal;
    return out;
  }
  // Closed by the drain of a stopping server, not by the client.
  if (stopping && (kind == CloseReason::closed_locally || kind == CloseReason::timed_out)) {
    out.label = out.text = "server stopping";
    return out;
  }
  if (kind == CloseReason::error) {
    out.label = out.text = code.message();
    out.error = true;
    return out;
  }
  out.label = std::string(label(kind));
  out.error = is_error(kind);
  if (!with_text) return out;
  switch (kind) {
    case CloseReason::tls_handshake_failed:
    case CloseReason::tls_error:
      out.text = fmt::format("{} ({})", label(kind), code.message());
      break;
    case CloseReason::handshake_timeout:
      out.text = fmt::format("{} ({:g} s)", label(kind), handshake_timeout_s);
      break;
    case CloseReason::peer_closed:
      out.text = code == Errc::tls_truncated ? "peer closed without TLS close_notify (truncated)"
                                             : std::string(describe(kind));
      break;
    default:
      out.text = std::string(describe(kind));
      break;
  }
  return out;
}

ServeObserver::ServeObserver(Options options)
    : options_(std::move(options)), log_(options_.log_format) {}

int64_t ServeObserver::connected(const TcpConnectionPtr& conn) {
  // Counted before it is listed, so the open count never falls short of
  // the rows of /clients.json.
  const int64_t clients = counters_.count_connection();
  if (tracks_clients_) registry_.add(conn);
  return clients;
}

void ServeObserver::admitted(const TcpConnectionPtr& conn, int64_t clients) {
  const ServeSession* session = conn->context<ServeSession>();
  const bool proxied = session != nullptr && session->client;
  const bool listed_by_name = proxied && tracks_clients_;
  // A name is text to format: only when somebody reads it (not with --quiet).
  if (!listed_by_name && !logs_connections()) return;
  const std::string peer = peer_name(conn);
  if (listed_by_name) registry_.set_peer(conn, peer);
  if (!logs_connections()) return;
  auto count = static_cast<unsigned long long>(clients);
  if (proxied) {
    // Both addresses: the client for the reader, the proxy for whoever
    // chases a misbehaving balancer.
    std::string via = conn->peer_endpoint().to_string();
    log_.log("connect", fmt::format("connect {} via {} (clients: {})", peer, via, count),
             {Logger::str("peer", peer), Logger::str("via", via), Logger::num("clients", count)});
    return;
  }
  log_.log("connect", fmt::format("connect {} (clients: {})", peer, count),
           {Logger::str("peer", peer), Logger::num("clients", count)});
}

void ServeObserver::refused(const Endpoint& peer, std::error_code why) {
  if (why == Errc::too_many_connections) {
    counters_.count_refused("too many connections");
  } else {
    counters_.count_refused(why == Errc::not_allowed ? "not allowed" : why.message());
  }
  if (!logs_connections()) return;
  auto clients = static_cast<unsigned long long>(counters_.open());
  std::string reason =
      why == Errc::not_allowed ? "refused: not allowed" : "refused: too many connections";
  log_.log("disconnect",
           fmt::format("disconnect {}: {} (clients: {})", peer.to_string(), reason, clients),
           {Logger::str("peer", peer.to_string()), Logger::str("reason", reason),
            Logger::num("clients", clients)});
}

// The handshake is the connection's business (TcpConnection::start_tls, the
// handshake timeout, failures as close reasons); the log names its outcome.
void ServeObserver::handshake(const TcpConnectionPtr& conn) {
  const TlsSession* tls = conn->tls();
  if (tls == nullptr || !logs_connections()) return;
  const std::string peer = peer_name(conn);
  // The server name is the client's to choose, any bytes up to 255: escaped
  // for the text line; the JSON field holds it as sent (json_text() keeps
  // the line valid).
  std::string sni(tls->requested_server_name());
  log_.log("tls",
           fmt::format("tls {}: {} {}{}", peer, tls->protocol_version(), tls->cipher(),
                       sni.empty() ? "" : fmt::format(" (server name {})", printable(sni))),
           {Logger::str("peer", peer), Logger::str("version", std::string(tls->protocol_version())),
            Logger::str("cipher", std::string(tls->cipher())), Logger::str("server_name", sni)});
}

void ServeObserver::message(const TcpConnectionPtr& conn, std::string_view shown) {
  std::string peer = peer_name(conn);
  log_.log("message", fmt::format("message from {}: {}", peer, shown),
           {Logger::str("peer", peer), Logger::str("text", std::string(shown))});
}

void ServeObserver::encrypted_message(const TcpConnectionPtr& conn, size_t bytes) {
  // What travels encrypted is not written to a log in the clear.
  std::string peer = peer_name(conn);
  log_.log("message", fmt::format("message from {}: {} bytes (TLS: text not logged)", peer, bytes),
           {Logger::str("peer", peer), Logger::num("bytes", bytes)});
}

void ServeObserver::closed(const TcpConnectionPtr& conn) {
  if (tracks_clients_) {
    registry_.remove(conn, counters_);
  } else {
    counters_.count_closed_bytes(conn->bytes_received(), conn->bytes_sent());
  }
  // A TLS client's FIN without its close_notify closes the connection as
  // cleanly as any FIN (the metrics count it so); the log line says that
  // what the client sent may be cut short.
  const CloseReason kind = conn->close_kind();
  const std::error_code code = kind == CloseReason::peer_closed && conn->tls_truncated()
                                   ? make_error_code(Errc::tls_truncated)
                                   : conn->close_reason();
  const CloseOutcome outcome =
      close_outcome(kind, code, stopping_.load(), conn->context<ServeSession>(),
                    options_.tls_handshake_timeout_s, logs_connections());
  if (outcome.refusal) {
    counters_.count_refused(outcome.label);
  } else {
    counters_.count_disconnect(outcome.label, outcome.error);
  }
  // Uncounted after it is unlisted (see connected()).
  const int64_t clients = counters_.count_close();
  if (!logs_connections()) return;
  const std::string peer = peer_name(conn);
  log_.log("disconnect",
           fmt::format("disconnect {}: {} (clients: {})", peer, outcome.text, clients),
           {Logger::str("peer", peer), Logger::str("reason", outcome.text),
            Logger::num("clients", static_cast<unsigned long long>(clients))});
}

bool ServeObserver::stopping() {
  if (stopping_.exchange(true)) return false;
  const uint64_t open = counters_.open();
  log_.log("stopping", fmt::format("stopping: no new connections; draining {} clients", open),
           {Logger::num("clients", open)});
  return true;
}

void ServeObserver::stopped() {
  const uint64_t served = counters_.connections();
  const uint64_t in = counters_.closed_bytes_received();
  const uint64_t out = counters_.closed_bytes_sent();
  log_.log(
      "stopped",
      fmt::format("stopped: served {} connections, {} bytes in, {} bytes out", served, in, out),
      {Logger::num("connections", served), Logger::num("bytes_in", in),
       Logger::num("bytes_out", out)});
}

std::string ServeObserver::peer_name(const TcpConnectionPtr& conn) const {
  const ServeSession* session = conn->context<ServeSession>();
  if (session != nullptr && session->client) return session->client->to_string();
  return conn->peer_endpoint().to_string();
}

std::string ServeObserver::metrics_text() const {
  return render_metrics(options_.mode, counters_, registry_.traffic(counters_));
}

std::string ServeObserver::clients_json(
    const std::function<std::string(const TcpConnectionPtr&)>& name_of) const {
  // A status page, not an export: the count says if there are more.
  constexpr size_t kMaxRows = 1000;
  return cli::clients_json(registry_.clients(kMaxRows, name_of), counters_.open());
}

}  // namespace tcpkit::cli

#include "serve/serve_app.h"

#include <fmt/core.h>

#include <algorithm>
#include <optional>

#include "common/cli_common.h"
#include "common/text_escape.h"
#include "serve/chat_cluster.h"
#include "serve/chat_room.h"
#include "serve/metrics_server.h"
#include "tcpkit/buffer.h"
#include "tcpkit/length_prefix_codec.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/proxy_protocol.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tls_session.h"
#include "tcpkit/transcoder.h"

namespace tcpkit::cli {

const char* to_string(ServeMode mode) {
  switch (mode) {
    case ServeMode::ack:
      return "ack";
    case ServeMode::echo:
      return "echo";
    case ServeMode::discard:
      return "discard";
    case ServeMode::chat:
      return "chat";
  }
  return "?";
}

const char* to_string(Framing framing) {
  switch (framing) {
    case Framing::raw:
      return "raw";
    case Framing::line:
      return "line";
    case Framing::length:
      return "length";
  }
  return "?";
}

// Per-connection state, kept in the connection's context slot, only for
// connections that need it (see needs_session()): the idle clients of a
// quiet echo or ack server cost the connection alone.
struct ServeApp::Session {
  // The log's view of the messages. A UTF-8 wire keeps its bytes, so that
  // printable() escapes invalid ones itself, unambiguously; only the start
  // of a character cut by a read waits here for the rest. Other encodings go
  // through a decoder to UTF-8.
  std::optional<Transcoder> decoder;
  std::string utf8_tail;
  // PROXY protocol: nothing is served while the header is pending, and the
  // timer closes a proxy that never completes it.
  bool proxy_pending = false;
  TimerId proxy_timer = 0;
  std::optional<Endpoint> client;  // the real client, when a PROXY header named one
  // Closed on our initiative (a refusal, a bad PROXY header): what still
  // arrives is ignored, and these say why, for the log and the metrics.
  bool rejected = false;
  bool refusal = false;     // refused before being served, not disconnected
  std::string close_label;  // the metrics label: "bad PROXY header"
  std::string close_note;   // the log's words: "bad PROXY header (reason)"
};

namespace {

ServerOptions server_options(const ServeOptions& o, const std::shared_ptr<const TlsContext>& tls) {
  ServerOptions so;
  // Behind a proxy the PROXY header comes first, in the clear; TLS starts
  // after it (pass_proxy_header).
  if (!o.proxy_protocol) so.tls = tls;
  // A client gets this long to complete its handshake, so connections that
  // never finish one (a slowloris of TLS) cannot pile up.
  so.connection.handshake_timeout = to_millis(o.tls_handshake_timeout_s);
  so.threads = o.threads;
  so.reuse_port = o.reuse_port;
  so.max_connections = o.max_conns;
  so.unix_mode = o.unix_mode;
  so.connection.high_water_mark = o.high_water_mark;
  // A chat member that does not read is dropped, so one slow client cannot
  // hold everybody's lines in memory. Elsewhere the producer is the peer
  // itself, so pausing its reads bounds memory without losing bytes.
  so.connection.overflow =
      o.mode == ServeMode::chat ? OverflowPolicy::close : OverflowPolicy::pause_reading;
  so.connection.idle_timeout = to_millis(o.idle_timeout_s);
  return so;
}

}  // namespace

ServeApp::ServeApp(EventLoop* loop, ServeOptions options, std::optional<TlsContext> tls)
    : loop_(loop),
      options_(std::move(options)),
      log_(options_.log_format),
      tls_(tls ? std::make_shared<const TlsContext>(std::move(*tls)) : nullptr),
      server_(loop, server_options(options_, tls_)),
      metrics_(to_string(options_.mode)) {
  if (options_.mode == ServeMode::chat) room_ = std::make_unique<ChatRoom>();
  // serve_cmd validated the encoding, so converting the reply cannot fail
  // on the name; unconvertible characters come out escaped.
  auto reply = Transcoder::convert("utf-8", options_.encoding, options_.reply);
  encoded_reply_ = reply ? *reply : options_.reply;
  server_.set_on_connection([this](const TcpConnectionPtr& c) { on_connection(c); });
  server_.set_on_handshake([this](const TcpConnectionPtr& c) { log_handshake(c); });
  // Behind a proxy the accepted peer is the proxy itself: the access list is
  // checked against the real client once its PROXY header is in.
  if (!options_.access.empty() && !options_.proxy_protocol) {
    server_.set_accept_filter(
        [this](const Endpoint& peer) { return options_.access.permits(peer); });
  }
  server_.set_on_refused([this](const Endpoint& peer, std::error_code why) {
    if (why == Errc::too_many_connections) {
      metrics_.count_refused("too many connections");
    } else {
      metrics_.count_refused(why == Errc::not_allowed ? "not allowed" : why.message());
    }
    if (!log_connections()) return;
    auto clients = static_cast<unsigned long long>(clients_.load());
    std::string reason =
        why == Errc::not_allowed ? "refused: not allowed" : "refused: too many connections";
    log_.log("disconnect",
             fmt::format("disconnect {}: {} (clients: {})", peer.to_string(), reason, clients),
             {Logger::str("peer", peer.to_string()), Logger::str("reason", reason),
              Logger::num("clients", clients)});
  });
  MessageCallback handler;
  switch (options_.mode) {
    case ServeMode::echo:
      // Each read is one message here, whatever the framing: an echo server
      // does not look inside the bytes.
      handler = [this](const TcpConnectionPtr& c, Buffer& in) {
        metrics_.count_messages_received();
        metrics_.count_messages_sent();
        c->send(in);
      };
      break;
    case ServeMode::discard:
      handler = [this](const TcpConnectionPtr&, Buffer& in) {
        metrics_.count_messages_received();
        in.retrieve_all();
      };
      break;
    case ServeMode::ack:
    case ServeMode::chat:
      handler = [this](const TcpConnectionPtr& c, Buffer& in) { on_message(c, in); };
      break;
  }
  if (options_.proxy_protocol) {
    // Every mode sees only what follows the header, and only once it is in.
    handler = [this, serve = std::move(handler)](const TcpConnectionPtr& c, Buffer& in) {
      if (pass_proxy_header(c, in)) serve(c, in);
    };
  }
  server_.set_on_message(std::move(handler));
}

ServeApp::~ServeApp() = default;

Result<void> ServeApp::listen(const std::vector<Endpoint>& addresses) {
  for (const auto& address : addresses) {
    if (auto r = server_.listen(address); !r) return r;
  }
  return {};
}

Result<void> ServeApp::listen_metrics(const std::vector<Endpoint>& addresses) {
  // Without --metrics nothing reads the client list: no server, no registry.
  if (addresses.empty()) return {};
  if (!metrics_server_) {
    MetricsHandlers handlers;
    handlers.metrics = [this] { return metrics_.render(registry_.traffic()); };
    handlers.clients_json = [this] { return clients_json(); };
    // The host of --metrics, when it is a name, is one a browser may use.
    std::vector<std::string> names;
    if (auto split = Endpoint::split_host_port(options_.metrics)) names.push_back(split->first);
    metrics_server_ = std::make_unique<MetricsServer>(loop_, std::move(handlers), std::move(names));
  }
  for (const auto& address : addresses) {
    if (auto r = metrics_server_->listen(address); !r) return r;
  }
  return {};
}

void ServeApp::join_cluster(std::string label, std::vector<Endpoint> redis, RedisAuth auth) {
  if (!room_) return;
  cluster_ = std::make_unique<ChatCluster>(
      loop_, std::move(label), std::move(redis), std::move(auth), options_.max_message, log_,
      [this](std::string_view line) { broadcast_chat(line, nullptr); });
}

Result<void> ServeApp::start() {
  if (auto started = server_.start(); !started) return started;
  const std::string tls_note =
      tls_ ? fmt::format(" with TLS (certificate {})", options_.tls_cert) : "";
  for (const auto& ep : server_.listen_endpoints()) {
    log_.log("listening",
             fmt::format("listening on {} (mode {}, framing {}, encoding {}){}", ep.to_string(),
                         to_string(options_.mode), to_string(options_.framing), options_.encoding,
                         tls_note),
             {Logger::str("address", ep.to_string()), Logger::str("mode", to_string(options_.mode)),
              Logger::str("framing", to_string(options_.framing)),
              Logger::str("encoding", options_.encoding), Logger::str("tls", tls_ ? "on" : "off")});
  }
  if (metrics_server_) {
    metrics_server_->start();
    for (const auto& ep : metrics_server_->listen_endpoints()) {
      log_.log(
          "metrics",
          fmt::format("metrics on http://{0}/metrics, status page http://{0}/", ep.to_string()),
          {Logger::str("address", ep.to_string())});
    }
  }
  if (cluster_) cluster_->start();
  return {};
}

void ServeApp::begin_stop() {
  if (stopping_.exchange(true)) return;
  size_t open = static_cast<size_t>(clients_.load());
  log_.log("stopping", fmt::format("stopping: no new connections; draining {} clients", open),
           {Logger::num("clients", open)});
  auto drain = std::chrono::milliseconds(static_cast<long long>(options_.drain_timeout_s * 1000.0));
  server_.stop(drain, [this] {
    uint64_t in = bytes_in_.load();
    uint64_t out = bytes_out_.load();
    log_.log("stopped",
             fmt::format("stopped: served {} connections, {} bytes in, {} bytes out",
                         served_.load(), in, out),
             {Logger::num("connections", served_.load()), Logger::num("bytes_in", in),
              Logger::num("bytes_out", out)});
    if (cluster_) cluster_->stop();
    // Scrapes are answered until the clients are gone, then cut short.
    if (!metrics_server_) {
      loop_->quit();
      return;
    }
    metrics_server_->stop([this] { loop_->quit(); });
  });
}

void ServeApp::on_connection(const TcpConnectionPtr& conn) {
  if (conn->connected()) {
    served_.fetch_add(1, std::memory_order_relaxed);
    Session* session = nullptr;
    if (needs_session()) {
      Session fresh;
      if (logs_messages() && Transcoder::canonical_name(options_.encoding) != "UTF-8") {
        auto decoder = Transcoder::open(options_.encoding, "utf-8");
        if (decoder) fresh.decoder.emplace(std::move(*decoder));
      }
      session = &conn->set_context(std::move(fresh));
    }
    metrics_.count_connection();
    if (tracks_clients()) registry_.add(conn);
    const int64_t clients = clients_.fetch_add(1) + 1;
    if (options_.proxy_protocol) {
      await_proxy_header(conn, *session);
      return;
    }
    admit(conn, session, clients);
    return;
  }
  bytes_in_.fetch_add(conn->bytes_received(), std::memory_order_relaxed);
  bytes_out_.fetch_add(conn->bytes_sent(), std::memory_order_relaxed);
  if (tracks_clients()) registry_.remove(conn);
  if (Session* session = conn->context<Session>();
      session != nullptr && session->proxy_timer != 0) {
    conn->loop()->cancel(session->proxy_timer);
    session->proxy_timer = 0;
  }
  const std::string reason = close_text(conn);
  count_disconnect(conn);
  if (room_) {
    std::string name = room_->leave(conn);
    if (!name.empty()) broadcast_chat(fmt::format("* {} left\n", name), conn);
  }
  int64_t clients = clients_.fetch_sub(1) - 1;
  if (!log_connections()) return;
  const std::string peer = peer_name(conn);
  log_.log("disconnect", fmt::format("disconnect {}: {} (clients: {})", peer, reason, clients),
           {Logger::str("peer", peer), Logger::str("reason", reason),
            Logger::num("clients", static_cast<unsigned long long>(clients))});
}

void ServeApp::on_message(const TcpConnectionPtr& conn, Buffer& in) {
  Session* session = conn->context<Session>();
  std::string message;
  DecodeResult result = DecodeResult::need_more;
  const bool lines = options_.framing == Framing::line || options_.mode == ServeMode::chat;
  if (!lines && options_.framing == Framing::raw) {
    // The tutorial's server: whatever one recv() returned is one message.
    message = in.retrieve_all_as_string();
    metrics_.count_messages_received();
    handle_message(conn, session, message);
    return;
  }
  const LineCodec line_codec(options_.max_message);
  const LengthPrefixCodec length_codec(options_.max_message);
  for (;;) {
    result = lines ? line_codec.decode(in, &message) : length_codec.decode(in, &message);
    if (result != DecodeResult::frame) break;
    metrics_.count_messages_received();
    if (options_.mode == ServeMode::chat) {
      handle_chat_line(conn, message);
    } else {
      handle_message(conn, session, message);
    }
  }
  if (result == DecodeResult::too_large) {
    in.retrieve_all();
    conn->force_close(make_error_code(Errc::frame_too_large));
  }
}

void ServeApp::handle_message(const TcpConnectionPtr& conn, Session* session,
                              std::string_view message) {
  if (logs_messages() && conn->tls() != nullptr) {
    // What travels encrypted is not written to a log in the clear.
    std::string peer = peer_name(conn);
    log_.log("message",
             fmt::format("message from {}: {} bytes (TLS: text not logged)", peer, message.size()),
             {Logger::str("peer", peer), Logger::num("bytes", message.size())});
  } else if (logs_messages()) {
    const size_t invalid_before =
        session != nullptr && session->decoder ? session->decoder->invalid_bytes() : 0;
    std::string text = log_text(session, message);
    std::string peer = peer_name(conn);
    // A decoder that escaped bytes of this message wrote "\xHH" into the
    // text itself; doubling every backslash would garble those, so that
    // message keeps its backslashes as they are.
    const bool decoder_escaped = session != nullptr && session->decoder &&
                                 session->decoder->invalid_bytes() != invalid_before;
    std::string shown =
        printable(text, kMaxPrintableBytes, decoder_escaped ? Backslash::keep : Backslash::escape);
    log_.log("message", fmt::format("message from {}: {}", peer, shown),
             {Logger::str("peer", peer), Logger::str("text", shown)});
  }
  send_framed(conn, encoded_reply_);
}

std::string ServeApp::log_text(Session* session, std::string_view message) {
  if (session == nullptr) return std::string(message);
  if (session->decoder) return session->decoder->feed(message);
  std::string text = std::move(session->utf8_tail);
  text += message;
  session->utf8_tail = text.substr(text.size() - incomplete_utf8_tail(text));
  text.resize(text.size() - session->utf8_tail.size());
  return text;
}

void ServeApp::handle_chat_line(const TcpConnectionPtr& conn, std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  constexpr std::string_view kNick = "/nick ";
  if (line.substr(0, kNick.size()) == kNick) {
    std::string name(line.substr(kNick.size()));
    if (auto problem = check_nick(name)) {
      // Only the one who asked hears why; the room never sees the name.
      auto reply = Transcoder::convert("utf-8", options_.encoding,
                                       fmt::format("* nick refused: {}\n", *problem));
      conn->send(reply ? *reply : fmt::format("* nick refused: {}\n", *problem));
      return;
    }
    std::string old = room_->rename(conn, name);
    broadcast_chat(fmt::format("* {} is now known as {}\n", old, name), conn);
    return;
  }
  std::string text = fmt::format("<{}> {}\n", room_->name_of(conn), line);
  broadcast_chat(text, conn);
  if (cluster_) cluster_->publish(text);
}

// Nicks are kept and broadcast in the wire encoding, so they are judged in
// UTF-8 after a conversion that must not have needed a single escape.
std::optional<std::string> ServeApp::check_nick(std::string_view wire) const {
  std::string utf8(wire);
  if (Transcoder::canonical_name(options_.encoding) != "UTF-8") {
    auto decoder = Transcoder::open(options_.encoding, "utf-8");
    if (!decoder) return "the server cannot read its own encoding";
    utf8 = decoder->feed(wire);
    utf8 += decoder->finish();
    if (decoder->invalid_bytes() > 0) return "a nick must be valid text in the server's encoding";
  }
  return nick_problem(utf8);
}

void ServeApp::broadcast_chat(std::string_view line, const TcpConnectionPtr& except) {
  metrics_.count_messages_sent(room_->broadcast(line, except));
}

// The metrics label of a close: the connection's typed reason, or ours
// when we closed it; the log line's words start with the same label.
void ServeApp::count_disconnect(const TcpConnectionPtr& conn) {
  const Session* session = conn->context<Session>();
  if (session != nullptr && session->rejected) {
    // Closed by us before it was served (an untrusted proxy, a client the
    // PROXY header names that --deny refuses): a refusal, not a disconnect.
    if (session->refusal) {
      metrics_.count_refused(session->close_label);
    } else {
      metrics_.count_disconnect(session->close_label, true);
    }
    return;
  }
  const CloseReason kind = conn->close_kind();
  if (stopped_by_us(kind)) {
    metrics_.count_disconnect("server stopping", false);
  } else if (kind == CloseReason::error) {
    metrics_.count_disconnect(conn->close_reason().message(), true);
  } else {
    metrics_.count_disconnect(label(kind), is_error(kind));
  }
}

bool ServeApp::stopped_by_us(CloseReason kind) const {
  return stopping_.load() &&
         (kind == CloseReason::closed_locally || kind == CloseReason::timed_out);
}

std::string ServeApp::clients_json() const {
  constexpr size_t kMaxRows =
      1000;  // a status page, not an export: the count says if there are more
  auto name_of = [this](const TcpConnectionPtr& conn) -> std::string {
    if (!room_) return "";
    std::string name = room_->name_of(conn);
    if (options_.encoding == "utf-8") return name;
    // Names are kept in the wire encoding; JSON wants UTF-8.
    auto utf8 = Transcoder::convert(options_.encoding, "utf-8", name);
    return utf8 ? *utf8 : name;
  };
  return cli::clients_json(registry_.clients(kMaxRows, name_of), registry_.size());
}

void ServeApp::send_framed(const TcpConnectionPtr& conn, std::string_view payload) {
  metrics_.count_messages_sent();
  switch (options_.framing) {
    case Framing::raw:
      conn->send(payload);
      return;
    case Framing::line: {
      std::string line(payload);
      line += '\n';
      conn->send(line);
      return;
    }
    case Framing::length: {
      Buffer out;
      LengthPrefixCodec::encode(payload, out);
      conn->send(out.view());
      return;
    }
  }
}

void ServeApp::arm_proxy_deadline(const TcpConnectionPtr& conn, Session& session) {
  const double seconds = options_.proxy_timeout_s;
  auto timeout = std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0));
  std::weak_ptr<TcpConnection> weak = conn;
  session.proxy_timer = conn->loop()->run_after(timeout, [this, weak, seconds] {
    TcpConnectionPtr c = weak.lock();
    Session* s = c ? c->context<Session>() : nullptr;
    if (s == nullptr) return;
    s->proxy_timer = 0;
    if (s->proxy_pending && !s->rejected) {
      reject(c, *s, std::make_error_code(std::errc::timed_out), "PROXY header timeout",
             fmt::format("PROXY header timeout ({:g} s)", seconds));
    }
  });
}

// ---- TLS ------------------------------------------------------------------

// The handshake is the connection's business (TcpConnection::start_tls, the
// handshake timeout, failures as close reasons); the log names its outcome.
void ServeApp::log_handshake(const TcpConnectionPtr& conn) {
  const TlsSession* tls = conn->tls();
  if (tls == nullptr || !log_connections()) return;
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

// ---- PROXY protocol -------------------------------------------------------

void ServeApp::admit(const TcpConnectionPtr& conn, Session* session, int64_t clients) {
  const bool proxied = session != nullptr && session->client;
  const std::string peer = peer_name(conn);
  if (proxied && tracks_clients()) registry_.set_peer(conn, peer);
  if (log_connections()) {
    auto count = static_cast<unsigned long long>(clients);
    if (proxied) {
      // Both addresses: the client for the reader, the proxy for whoever
      // chases a misbehaving balancer.
      std::string via = conn->peer_endpoint().to_string();
      log_.log("connect", fmt::format("connect {} via {} (clients: {})", peer, via, count),
               {Logger::str("peer", peer), Logger::str("via", via), Logger::num("clients", count)});
    } else {
      log_.log("connect", fmt::format("connect {} (clients: {})", peer, count),
               {Logger::str("peer", peer), Logger::num("clients", count)});
    }
  }
  if (room_) {
    size_t online = room_->join(conn, peer);
    broadcast_chat(fmt::format("* {} joined ({} online)\n", peer, online), conn);
  }
}

void ServeApp::await_proxy_header(const TcpConnectionPtr& conn, Session& session) {
  // A header from anyone else would let any client claim any address.
  const Endpoint& proxy = conn->peer_endpoint();
  const bool trusted = std::any_of(options_.trusted_proxies.begin(), options_.trusted_proxies.end(),
                                   [&proxy](const Cidr& net) { return net.contains(proxy); });
  if (!trusted) {
    refuse(conn, session, "untrusted proxy", "untrusted proxy (not in --trusted-proxy)");
    return;
  }
  session.proxy_pending = true;
  arm_proxy_deadline(conn, session);
}

bool ServeApp::pass_proxy_header(const TcpConnectionPtr& conn, Buffer& in) {
  Session* session = conn->context<Session>();
  if (session == nullptr || session->rejected) {
    in.retrieve_all();
    return false;
  }
  if (!session->proxy_pending) return true;
  // The bytes stay in the connection's input buffer until the header is
  // whole; the parser refuses anything longer than a header can be, so the
  // wait holds at most 16 + 65535 bytes.
  auto parsed = parse_proxy_header(in.view());
  if (parsed.status == ProxyParseStatus::need_more) return false;
  if (parsed.status == ProxyParseStatus::invalid) {
    in.retrieve_all();
    reject(conn, *session, make_error_code(Errc::bad_proxy_header), "bad PROXY header",
           "bad PROXY header (" + parsed.reason + ")");
    return false;
  }
  in.retrieve(parsed.consumed);
  session->proxy_pending = false;
  if (session->proxy_timer != 0) {
    conn->loop()->cancel(session->proxy_timer);
    session->proxy_timer = 0;
  }
  // --allow/--deny judge the client a header names. LOCAL is the proxy's
  // own health check, admitted by --trusted-proxy alone. UNKNOWN, UNSPEC and
  // UNIX name no client, yet some client may be behind them: skipping the
  // rules would let a denied client in through any such header, so they
  // judge the one address known, the proxy's.
  session->client = parsed.header.source;
  const bool judged = session->client || !parsed.header.local;
  const Endpoint& judged_peer = session->client ? *session->client : conn->peer_endpoint();
  if (judged && !options_.access.permits(judged_peer)) {
    in.retrieve_all();
    refuse(conn, *session, "not allowed", "not allowed");
    return false;
  }
  admit(conn, session, clients_.load());
  // TLS, when it is on, starts after the header: what follows the header
  // in `in` is its first bytes, which the connection hands to it.
  if (tls_) {
    if (auto started = conn->start_tls(*tls_); !started) {
      reject(conn, *session, started.error().code(), "TLS session failed",
             fmt::format("TLS session failed ({})", started.error().code().message()));
    }
    return false;
  }
  return in.readable_bytes() > 0;
}

void ServeApp::reject(const TcpConnectionPtr& conn, Session& session, std::error_code code,
                      std::string label, std::string note) {
  session.rejected = true;
  session.proxy_pending = false;
  session.close_label = std::move(label);
  session.close_note = std::move(note);
  conn->force_close(code);
}

void ServeApp::refuse(const TcpConnectionPtr& conn, Session& session, std::string label,
                      std::string_view why) {
  reject(conn, session, make_error_code(Errc::not_allowed), std::move(label),
         fmt::format("refused: {}", why));
  session.refusal = true;
}

std::string ServeApp::peer_name(const TcpConnectionPtr& conn) {
  Session* session = conn->context<Session>();
  if (session != nullptr && session->client) return session->client->to_string();
  return conn->peer_endpoint().to_string();
}

std::string ServeApp::close_text(const TcpConnectionPtr& conn) const {
  const Session* session = conn->context<Session>();
  if (session != nullptr && !session->close_note.empty()) return session->close_note;
  const CloseReason kind = conn->close_kind();
  const std::error_code code = conn->close_reason();
  if (stopped_by_us(kind)) return "server stopping";
  switch (kind) {
    case CloseReason::tls_handshake_failed:
    case CloseReason::tls_error:
      return fmt::format("{} ({})", label(kind), code.message());
    case CloseReason::handshake_timeout:
      return fmt::format("{} ({:g} s)", label(kind), options_.tls_handshake_timeout_s);
    case CloseReason::error:
      return code.message();
    default:
      return std::string(describe(kind));
  }
}

}  // namespace tcpkit::cli

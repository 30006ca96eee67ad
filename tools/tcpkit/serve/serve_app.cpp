#include "serve/serve_app.h"

#include <fmt/core.h>

#include "common/cli_common.h"
#include "serve/ack_mode.h"
#include "serve/chat_mode.h"
#include "serve/metrics_server.h"
#include "serve/mode_handler.h"
#include "serve/proxy_stage.h"
#include "serve/serve_session.h"
#include "serve/tls_stage.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

namespace {

ServerOptions server_options(const ServeOptions& o, const TlsStage* tls) {
  ServerOptions so;
  if (tls != nullptr) tls->configure_server(so);
  // A client gets this long to complete its handshake, so connections that
  // never finish one (a slowloris of TLS) cannot pile up.
  so.connection.handshake_timeout = to_millis(o.tls_handshake_timeout_s);
  so.threads = o.threads;
  so.busy_poll = std::chrono::microseconds(o.busy_poll_us);
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

ServeObserver::Options observer_options(const ServeOptions& o) {
  ServeObserver::Options oo;
  oo.mode = to_string(o.mode);
  oo.log_format = o.log_format;
  oo.quiet = o.quiet;
  oo.tls_handshake_timeout_s = o.tls_handshake_timeout_s;
  return oo;
}

}  // namespace

ServeApp::ServeApp(EventLoop* loop, ServeOptions options, std::optional<TlsContext> tls)
    : loop_(loop),
      options_(std::move(options)),
      observer_(observer_options(options_)),
      tls_(tls ? std::make_unique<TlsStage>(std::move(*tls), options_.proxy_protocol) : nullptr),
      server_(loop, server_options(options_, tls_.get())) {
  mode_ = make_mode();  // in the body: it sets chat_, declared after mode_
  server_.set_on_connection([this](const TcpConnectionPtr& c) { on_connection(c); });
  server_.set_on_draining([this](const TcpConnectionPtr& c) { mode_->draining(c); });
  if (tls_) server_.set_on_handshake([this](const TcpConnectionPtr& c) { observer_.handshake(c); });
  server_.set_on_refused(
      [this](const Endpoint& peer, std::error_code why) { observer_.refused(peer, why); });
  MessageCallback serve = mode_->message_callback();
  if (options_.proxy_protocol) {
    // Behind a proxy the accepted peer is the proxy itself: the stage judges
    // the access list on the client its header names.
    proxy_ = std::make_unique<ProxyStage>(
        options_, [this](const TcpConnectionPtr& c) { return after_proxy_header(c); });
    serve = proxy_->message_callback(std::move(serve));
  } else if (!options_.access.empty()) {
    server_.set_accept_filter(
        [this](const Endpoint& peer) { return options_.access.permits(peer); });
  }
  server_.set_on_message(std::move(serve));
}

ServeApp::~ServeApp() = default;

std::unique_ptr<ModeHandler> ServeApp::make_mode() {
  switch (options_.mode) {
    case ServeMode::echo:
      return std::make_unique<EchoMode>(observer_, options_.splice);
    case ServeMode::discard:
      return std::make_unique<DiscardMode>(observer_);
    case ServeMode::chat: {
      auto chat = std::make_unique<ChatMode>(options_, observer_);
      chat_ = chat.get();
      return chat;
    }
    case ServeMode::ack:
      break;
  }
  return std::make_unique<AckMode>(options_, observer_);
}

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
    observer_.track_clients();
    MetricsHandlers handlers;
    handlers.metrics = [this] { return observer_.metrics_text(); };
    handlers.clients_json = [this] {
      return observer_.clients_json(
          [this](const TcpConnectionPtr& c) { return mode_->client_name(c); });
    };
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
  if (chat_ != nullptr)
    chat_->join_cluster(loop_, std::move(label), std::move(redis), std::move(auth));
}

Result<void> ServeApp::start() {
  if (auto started = server_.start(); !started) return started;
  Logger& log = observer_.log();
  const std::string tls_note =
      tls_ ? fmt::format(" with TLS (certificate {})", options_.tls_cert) : "";
  for (const auto& ep : server_.listen_endpoints()) {
    log.log("listening",
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
      log.log("metrics",
              fmt::format("metrics on http://{0}/metrics, status page http://{0}/", ep.to_string()),
              {Logger::str("address", ep.to_string())});
    }
  }
  if (chat_ != nullptr) chat_->start_cluster();
  return {};
}

void ServeApp::begin_stop() {
  if (!observer_.stopping()) return;
  auto drain = std::chrono::milliseconds(static_cast<long long>(options_.drain_timeout_s * 1000.0));
  server_.stop(drain, [this] {
    observer_.stopped();
    if (chat_ != nullptr) chat_->stop_cluster();
    // Scrapes are answered until the clients are gone, then cut short.
    if (!metrics_server_) {
      loop_->quit();
      return;
    }
    metrics_server_->stop([this] { loop_->quit(); });
  });
}

// Connected: the observer counts it, then the first stage has it. Gone:
// each stage lets go of it, the observer last, so that the close is counted
// and logged after the chat room has said goodbye.
void ServeApp::on_connection(const TcpConnectionPtr& conn) {
  if (!conn->connected()) {
    if (proxy_) proxy_->end(conn);
    mode_->closed(conn);
    observer_.closed(conn);
    return;
  }
  ServeSession* session = nullptr;
  if (proxy_ || mode_->keeps_session()) {
    session = &conn->set_context(ServeSession{});
    mode_->open_session(*session);
  }
  const int64_t clients = observer_.connected(conn);
  if (proxy_) {
    proxy_->begin(conn, *session);
    return;
  }
  admit(conn, clients);
}

// The mode first, then the log line: once "connect" is logged the
// connection is in the chat room, as "disconnect" is logged after it left.
void ServeApp::admit(const TcpConnectionPtr& conn, int64_t clients) {
  mode_->admitted(conn);
  observer_.admitted(conn, clients);
}

bool ServeApp::after_proxy_header(const TcpConnectionPtr& conn) {
  admit(conn, static_cast<int64_t>(observer_.counters().open()));
  if (!tls_) return true;
  // TLS, when it is on, starts after the header: what follows the header
  // in the input buffer is its first bytes, which the connection hands to it.
  tls_->start(conn, *conn->context<ServeSession>());
  return false;
}

}  // namespace tcpkit::cli

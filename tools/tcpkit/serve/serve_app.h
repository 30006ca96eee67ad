// ServeApp: `tcpkit serve` on top of TcpServer — the tutorial's server grown
// into ack / echo / discard / chat modes with framing and text encodings.
//
// A connection goes through stages, each handing it to the next when done:
//
//   ProxyStage (--proxy-protocol)  the PROXY header, --trusted-proxy, --allow/--deny
//   TlsStage   (--tls-cert)        TLS, started by the server or after the header
//   ModeHandler (--mode)           AckMode, EchoMode, DiscardMode or ChatMode
//
// and every stage tells one ServeObserver what happened, which keeps the
// one set of counters behind the log, the metrics and the status page.
// ServeApp wires them and owns them all.
//
// Created and run by serve_cmd.cpp in the main thread, which owns the base
// loop. Connection callbacks run in the I/O loops; shared state (the chat
// room, counters, the log) is safe across them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "serve/chat_cluster.h"
#include "serve/serve_observer.h"
#include "serve/serve_options.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_server.h"
#include "tcpkit/tls_context.h"

namespace tcpkit::cli {

class ChatMode;
class MetricsServer;
class ModeHandler;
class ProxyStage;
class TlsStage;

class ServeApp {
 public:
  // `tls`: the server context built from --tls-cert/--tls-key, if given.
  ServeApp(EventLoop* loop, ServeOptions options, std::optional<TlsContext> tls = std::nullopt);
  ~ServeApp();

  // Binds every address `host` names. The error names the address.
  Result<void> listen(const std::vector<Endpoint>& addresses);
  // Serves --metrics on each address; call before start().
  Result<void> listen_metrics(const std::vector<Endpoint>& addresses);
  // Chat mode: relays lines through the Redis at `redis` (named `label` in
  // the log) to other instances; call before start().
  void join_cluster(std::string label, std::vector<Endpoint> redis, RedisAuth auth);
  Result<void> start();
  // First SIGINT/SIGTERM: stop accepting, drain, then quit the loop.
  void begin_stop();

 private:
  std::unique_ptr<ModeHandler> make_mode();
  void on_connection(const TcpConnectionPtr& conn);
  // The client's address is known: the connect line, then the mode.
  void admit(const TcpConnectionPtr& conn, int64_t clients);
  // The PROXY header is in; see ProxyStage::HeaderCallback.
  bool after_proxy_header(const TcpConnectionPtr& conn);

  EventLoop* loop_;
  const ServeOptions options_;
  ServeObserver observer_;
  std::unique_ptr<TlsStage> tls_;  // --tls-cert/--tls-key; null: plain
  TcpServer server_;
  // Declared after what they use, so they are destroyed first.
  std::unique_ptr<ModeHandler> mode_;
  ChatMode* chat_ = nullptr;           // mode_, in chat mode
  std::unique_ptr<ProxyStage> proxy_;  // --proxy-protocol
  std::unique_ptr<MetricsServer> metrics_server_;
};

}  // namespace tcpkit::cli

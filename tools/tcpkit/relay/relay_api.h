// RelayApiServer: toxiproxy's HTTP API for `tcpkit relay --api HOST:PORT`.
//
//   GET/POST /proxies, POST /populate, GET/POST/PATCH/DELETE /proxies/{name},
//   GET/POST /proxies/{name}/toxics,
//   GET/POST/PATCH/DELETE /proxies/{name}/toxics/{toxic},
//   POST /reset, GET /version, GET /metrics (Prometheus)
//
// Owned by relay_cmd.cpp; runs on the base loop (its own TcpServer, no
// threads) beside ChaosRegistry, which it calls directly. Requests come
// from the network and are hostile until parsed: a request may hold at most
// kMaxHead bytes of head and kMaxBody of body, must arrive whole within
// kRequestDeadline of the connection's start (slow senders are cut off),
// and must name a numeric or localhost Host, so a web page that rebinds its
// DNS name to 127.0.0.1 cannot reach the API from a browser. Each
// connection carries one request; the answer says `Connection: close`.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/http_request.h"
#include "relay/chaos_registry.h"
#include "tcpkit/tcp_server.h"

namespace tcpkit::cli {

class RelayApiServer {
 public:
  static constexpr size_t kMaxHead = size_t{8} * 1024;
  static constexpr size_t kMaxBody = size_t{1024} * 1024;
  static constexpr std::chrono::seconds kRequestDeadline{10};

  RelayApiServer(EventLoop* loop, ChaosRegistry& registry);

  Result<void> listen(const Endpoint& address);
  Result<void> start();
  void stop(std::function<void()> on_stopped);
  std::vector<Endpoint> listen_endpoints() const { return server_.listen_endpoints(); }

  struct Reply {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
  };
  // The API's answer to one parsed request (no I/O).
  Reply handle(const HttpRequest& request);

 private:
  void on_connection(const TcpConnectionPtr& conn);
  void on_message(const TcpConnectionPtr& conn, Buffer& in);
  void respond(const TcpConnectionPtr& conn, const Reply& reply);

  EventLoop* loop_;
  ChaosRegistry& registry_;
  TcpServer server_;
};

}  // namespace tcpkit::cli

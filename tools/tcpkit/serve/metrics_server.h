// MetricsServer: the small HTTP/1.1 server behind `tcpkit serve --metrics`.
//
//   GET /              a live status page (HTML + inline script, no assets)
//   GET /clients.json  the connected clients, which that page polls
//   GET /metrics       Prometheus text format
//
// Owned by ServeApp; runs on the base loop (its own TcpServer, no threads),
// so scrapes never compete with clients for the I/O loops. It parses just
// enough HTTP for one request per connection: the request line and headers
// up to the blank line, capped at kMaxHeaderBytes, then answers with
// `Connection: close` and closes. Any other method is 405, any other path 404,
// a Host that does not name this server 421 (host_allowed()).
//
// Hostile clients (design decision 10): a scrape is one request that comes
// in at once, so each connection gets kRequestTimeout for its whole head, not
// an idle timer that every trickled byte re-arms, and kResponseTimeout more
// to read the answer. At kMaxConnections a new connection evicts the oldest
// one still waiting for its head, so 64 slow sockets cannot keep a real scrape
// out.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/http_request.h"
#include "tcpkit/callbacks.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_server.h"

namespace tcpkit::cli {

// Produce the bodies; called in the base loop for each request.
struct MetricsHandlers {
  std::function<std::string()> metrics;       // Prometheus text
  std::function<std::string()> clients_json;  // see clients_json()
};

class MetricsServer {
 public:
  static constexpr size_t kMaxHeaderBytes = size_t{8} * 1024;
  static constexpr size_t kMaxConnections = 64;
  static constexpr std::chrono::seconds kRequestTimeout{5};
  static constexpr std::chrono::seconds kResponseTimeout{10};

  // `host_names`: the names a Host field may carry besides IP literals and
  // localhost (the host of --metrics when it is a name).
  MetricsServer(EventLoop* loop, MetricsHandlers handlers,
                std::vector<std::string> host_names = {});

  Result<void> listen(const Endpoint& address);
  void start();
  // Closes the listener and every open scrape; `on_stopped` runs after.
  void stop(std::function<void()> on_stopped);
  std::vector<Endpoint> listen_endpoints() const { return server_.listen_endpoints(); }

 private:
  struct Open {
    std::weak_ptr<TcpConnection> conn;
    TimerId deadline = 0;
    bool answered = false;
  };

  void on_connection(const TcpConnectionPtr& conn);
  void on_message(const TcpConnectionPtr& conn, Buffer& in);
  // Closes `conn` after `timeout` unless it is gone by then.
  void arm_deadline(const TcpConnectionPtr& conn, Open& open, std::chrono::milliseconds timeout);
  void evict_one();
  void respond(const TcpConnectionPtr& conn, int status, std::string_view content_type,
               std::string_view body, std::string_view extra_headers = {});

  EventLoop* loop_;
  MetricsHandlers handlers_;
  std::vector<std::string> host_names_;
  TcpServer server_;
  std::map<uint64_t, Open> open_;  // by connection id: oldest first
};

}  // namespace tcpkit::cli

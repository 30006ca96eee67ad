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
// `Connection: close` and closes. Any other method is 405, any other path 404.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tcpkit/callbacks.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_server.h"

namespace tcpkit {
class EventLoop;
}

namespace tcpkit::cli {

// Produce the bodies; called in the base loop for each request.
struct MetricsHandlers {
  std::function<std::string()> metrics;       // Prometheus text
  std::function<std::string()> clients_json;  // see clients_json()
};

// One parsed request head.
struct HttpRequest {
  std::string method;
  std::string path;  // without the query string
};

enum class HttpParse { need_more, done, bad, too_large };

// Parses the head at the front of `data` (request line, headers, blank
// line). Header fields are read past but not kept: nothing here needs them.
HttpParse parse_http_request(std::string_view data, size_t max_bytes, HttpRequest* out);

class MetricsServer {
 public:
  static constexpr size_t kMaxHeaderBytes = 8 * 1024;
  static constexpr std::chrono::seconds kIdleTimeout{10};

  MetricsServer(EventLoop* loop, MetricsHandlers handlers);

  Result<void> listen(const Endpoint& address);
  void start();
  // Closes the listener and every open scrape; `on_stopped` runs after.
  void stop(std::function<void()> on_stopped);
  std::vector<Endpoint> listen_endpoints() const { return server_.listen_endpoints(); }

 private:
  void on_message(const TcpConnectionPtr& conn, Buffer& in);
  void respond(const TcpConnectionPtr& conn, int status, std::string_view content_type,
               std::string_view body, std::string_view extra_headers = {});

  MetricsHandlers handlers_;
  TcpServer server_;
};

}  // namespace tcpkit::cli

#include "metrics_server.h"

#include <fmt/core.h>

#include <cassert>

#include "status_page.h"
#include "tcpkit/buffer.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {
namespace {

ServerOptions metrics_server_options() {
  ServerOptions o;
  o.threads = 0;  // the base loop: a scrape is rare and quick
  o.max_connections = 64;
  o.connection.idle_timeout = MetricsServer::kIdleTimeout;
  o.connection.high_water_mark = 16 * 1024 * 1024;
  return o;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
  }
  return "Error";
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

}  // namespace

HttpParse parse_http_request(std::string_view data, size_t max_bytes, HttpRequest* out) {
  size_t end = data.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    // Be lenient with bare LF line ends, as RFC 9112 section 2.2 allows.
    end = data.find("\n\n");
    if (end == std::string_view::npos)
      return data.size() > max_bytes ? HttpParse::too_large : HttpParse::need_more;
  }
  if (end > max_bytes) return HttpParse::too_large;
  std::string_view line = data.substr(0, data.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // METHOD SP request-target SP HTTP-version, exactly one space apart.
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return HttpParse::bad;
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method) || !is_token(target) || version.substr(0, 5) != "HTTP/")
    return HttpParse::bad;
  out->method = std::string(method);
  out->path = std::string(target.substr(0, target.find('?')));
  return HttpParse::done;
}

MetricsServer::MetricsServer(EventLoop* loop, MetricsHandlers handlers)
    : handlers_(std::move(handlers)), server_(loop, metrics_server_options()) {
  server_.set_on_message([this](const TcpConnectionPtr& c, Buffer& in) { on_message(c, in); });
}

Result<void> MetricsServer::listen(const Endpoint& address) {
  return server_.listen(address);
}

void MetricsServer::start() {
  // Served on the base loop alone, from listeners bound in listen(): the
  // server has no I/O thread to start and nothing left to bind, so its
  // start() cannot fail.
  [[maybe_unused]] auto started = server_.start();
  assert(started.ok());
}

void MetricsServer::stop(std::function<void()> on_stopped) {
  server_.stop(std::chrono::milliseconds(0), std::move(on_stopped));
}

void MetricsServer::on_message(const TcpConnectionPtr& conn, Buffer& in) {
  // One request per connection: whatever follows the answered one (a
  // pipelined request, a body we do not want) is dropped.
  if (!conn->connected()) {
    in.retrieve_all();
    return;
  }
  HttpRequest request;
  HttpParse parsed = parse_http_request(std::string_view(in.peek(), in.readable_bytes()),
                                        kMaxHeaderBytes, &request);
  if (parsed == HttpParse::need_more) return;
  in.retrieve_all();
  if (parsed == HttpParse::too_large) {
    respond(conn, 431, "text/plain; charset=utf-8", "request header over 8 KiB\n");
    return;
  }
  if (parsed == HttpParse::bad) {
    respond(conn, 400, "text/plain; charset=utf-8", "malformed request line\n");
    return;
  }
  const bool known =
      request.path == "/" || request.path == "/metrics" || request.path == "/clients.json";
  if (!known) {
    respond(conn, 404, "text/plain; charset=utf-8",
            "not found: try /, /metrics or /clients.json\n");
    return;
  }
  if (request.method != "GET") {
    respond(conn, 405, "text/plain; charset=utf-8", "only GET is allowed\n", "Allow: GET\r\n");
    return;
  }
  if (request.path == "/metrics") {
    respond(conn, 200, "text/plain; version=0.0.4; charset=utf-8", handlers_.metrics());
  } else if (request.path == "/clients.json") {
    respond(conn, 200, "application/json", handlers_.clients_json());
  } else {
    respond(conn, 200, "text/html; charset=utf-8", status_page_html());
  }
}

void MetricsServer::respond(const TcpConnectionPtr& conn, int status, std::string_view content_type,
                            std::string_view body, std::string_view extra_headers) {
  std::string response = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n"
      "Connection: close\r\n{}\r\n",
      status, reason_phrase(status), content_type, body.size(), extra_headers);
  response += body;
  conn->send(std::move(response));
  conn->shutdown();
}

}  // namespace tcpkit::cli

#include "serve/metrics_server.h"

#include <fmt/core.h>

#include <algorithm>
#include <cassert>

#include "serve/status_page.h"
#include "tcpkit/buffer.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {
namespace {

ServerOptions metrics_server_options() {
  ServerOptions o;
  o.threads = 0;  // the base loop: a scrape is rare and quick
  // MetricsServer evicts at kMaxConnections itself; this is the backstop for
  // a burst that arrives before the evicted ones are gone.
  o.max_connections = 2 * MetricsServer::kMaxConnections;
  o.connection.high_water_mark = size_t{16} * 1024 * 1024;
  return o;
}

}  // namespace

MetricsServer::MetricsServer(EventLoop* loop, MetricsHandlers handlers,
                             std::vector<std::string> host_names)
    : loop_(loop),
      handlers_(std::move(handlers)),
      host_names_(std::move(host_names)),
      server_(loop, metrics_server_options()) {
  server_.set_on_connection([this](const TcpConnectionPtr& c) { on_connection(c); });
  server_.set_on_message([this](const TcpConnectionPtr& c, Buffer& in) { on_message(c, in); });
}

void MetricsServer::on_connection(const TcpConnectionPtr& conn) {
  if (!conn->connected()) {
    auto it = open_.find(conn->id());
    if (it == open_.end()) return;
    if (it->second.deadline != 0) loop_->cancel(it->second.deadline);
    open_.erase(it);
    return;
  }
  if (open_.size() >= kMaxConnections) evict_one();
  Open& open = open_[conn->id()];
  open.conn = conn;
  arm_deadline(conn, open, kRequestTimeout);
}

void MetricsServer::arm_deadline(const TcpConnectionPtr& conn, Open& open,
                                 std::chrono::milliseconds timeout) {
  if (open.deadline != 0) loop_->cancel(open.deadline);
  std::weak_ptr<TcpConnection> weak = conn;
  const uint64_t id = conn->id();
  open.deadline = loop_->run_after(timeout, [this, weak, id] {
    if (auto it = open_.find(id); it != open_.end()) it->second.deadline = 0;
    if (TcpConnectionPtr c = weak.lock())
      c->force_close(std::make_error_code(std::errc::timed_out));
  });
}

// The oldest connection still sending its head goes first: a scrape sends
// its request at once, so the oldest waiting one is the likeliest to be
// stalling. When every one has been answered, the oldest reader goes.
void MetricsServer::evict_one() {
  auto victim = std::find_if(open_.begin(), open_.end(),
                             [](const auto& entry) { return !entry.second.answered; });
  if (victim == open_.end()) victim = open_.begin();
  if (victim == open_.end()) return;
  TcpConnectionPtr conn = victim->second.conn.lock();
  if (victim->second.deadline != 0) loop_->cancel(victim->second.deadline);
  open_.erase(victim);
  if (conn) conn->force_close(make_error_code(Errc::too_many_connections));
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
                                        kMaxHeaderBytes, &request, kMaxHeaderBytes);
  if (parsed == HttpParse::need_more) return;
  in.retrieve_all();
  // Answered: the head's deadline gives way to one for reading the answer.
  if (auto it = open_.find(conn->id()); it != open_.end()) {
    it->second.answered = true;
    arm_deadline(conn, it->second, kResponseTimeout);
  }
  if (parsed == HttpParse::too_large) {
    respond(conn, 431, "text/plain; charset=utf-8", "request header over 8 KiB\n");
    return;
  }
  if (parsed == HttpParse::body_too_large) {
    respond(conn, 413, "text/plain; charset=utf-8", "request body over 8 KiB\n");
    return;
  }
  if (parsed == HttpParse::bad) {
    respond(conn, 400, "text/plain; charset=utf-8", "malformed request line\n");
    return;
  }
  if (request.host && !host_allowed(*request.host, host_names_)) {
    respond(conn, 421, "text/plain; charset=utf-8",
            "misdirected request: the Host field does not name this server\n");
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
      "X-Content-Type-Options: nosniff\r\nConnection: close\r\n{}\r\n",
      status, http_reason_phrase(status), content_type, body.size(), extra_headers);
  response += body;
  conn->send(std::move(response));
  conn->shutdown();
}

}  // namespace tcpkit::cli

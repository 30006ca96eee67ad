#include "relay/relay_api.h"

#include <fmt/core.h>

#include <cassert>
#include <memory>

#include "tcpkit/buffer.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {
namespace {

using json = nlohmann::json;

ServerOptions api_server_options() {
  ServerOptions o;
  o.threads = 0;  // the base loop, beside the registry it calls
  o.max_connections = 64;
  o.connection.idle_timeout = RelayApiServer::kRequestDeadline;
  o.connection.high_water_mark = size_t{16} * 1024 * 1024;
  return o;
}

RelayApiServer::Reply error_reply(int status, std::string_view text) {
  return {status, json{{"error", text}, {"status", status}}.dump()};
}

RelayApiServer::Reply error_reply(const Error& e) {
  const auto& code = e.code();
  int status = 500;
  if (code == std::errc::invalid_argument) status = 400;
  if (code == std::errc::no_such_file_or_directory) status = 404;
  if (code == std::errc::file_exists) status = 409;
  return error_reply(status, e.context().empty() ? e.message() : e.context());
}

RelayApiServer::Reply reply(const Result<json>& r, int status = 200) {
  if (!r) return error_reply(r.error());
  return {status, r->dump()};
}

RelayApiServer::Reply reply(const Result<void>& r) {
  if (!r) return error_reply(r.error());
  return {204, ""};
}

// The path's segments, each decoded ("/proxies/a%20b": "proxies", "a b"),
// as toxiproxy's router decodes them; nullopt for a broken escape.
std::optional<std::vector<std::string>> split_path(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    path.remove_prefix(1);  // the '/'
    size_t slash = path.find('/');
    auto part = percent_decode(path.substr(0, slash));
    if (!part) return std::nullopt;
    parts.push_back(std::move(*part));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  }
  return parts;
}

// One connection's request deadline, cancelled when it closes. Not
// copyable: a copy's end would cancel the timer that the original still
// stands for.
struct Deadline {
  Deadline(EventLoop* l, TimerId t) : loop(l), timer(t) {}
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  ~Deadline() { loop->cancel(timer); }

  EventLoop* loop;
  TimerId timer;
};

}  // namespace

RelayApiServer::RelayApiServer(EventLoop* loop, ChaosRegistry& registry)
    : loop_(loop), registry_(registry), server_(loop, api_server_options()) {
  server_.set_on_connection([this](const TcpConnectionPtr& c) { on_connection(c); });
  server_.set_on_message([this](const TcpConnectionPtr& c, Buffer& in) { on_message(c, in); });
}

Result<void> RelayApiServer::listen(const Endpoint& address) {
  return server_.listen(address);
}

Result<void> RelayApiServer::start() {
  return server_.start();
}

void RelayApiServer::stop(std::function<void()> on_stopped) {
  server_.stop(std::chrono::milliseconds(0), std::move(on_stopped));
}

// The idle timeout alone would let a client trickle a byte every few
// seconds for ever; the deadline bounds the whole request.
void RelayApiServer::on_connection(const TcpConnectionPtr& conn) {
  if (!conn->connected()) return;
  std::weak_ptr<TcpConnection> weak = conn;
  TimerId timer = loop_->run_after(kRequestDeadline, [weak] {
    if (auto c = weak.lock()) c->force_close();
  });
  conn->share_context(std::make_shared<Deadline>(loop_, timer));
}

void RelayApiServer::on_message(const TcpConnectionPtr& conn, Buffer& in) {
  if (!conn->connected()) {
    in.retrieve_all();
    return;
  }
  HttpRequest request;
  HttpParse parsed = parse_http_request(in.view(), kMaxHead, &request, kMaxBody);
  if (parsed == HttpParse::need_more) return;
  in.retrieve_all();  // one request per connection; anything after it is dropped
  if (parsed == HttpParse::too_large || parsed == HttpParse::body_too_large)
    return respond(conn, error_reply(413, "request too large"));
  if (parsed == HttpParse::bad) return respond(conn, error_reply(400, "malformed request"));
  // No Host at all is refused too: every client of the API sends one.
  if (!request.host || !host_allowed(*request.host, {}))
    return respond(conn,
                   error_reply(403, "Host must be an IP address or localhost (DNS rebinding)"));
  respond(conn, handle(request));
}

RelayApiServer::Reply RelayApiServer::handle(const HttpRequest& r) {
  const auto split = split_path(r.path);
  if (!split) return error_reply(400, "malformed request path: a '%' without two hex digits");
  const std::vector<std::string>& parts = *split;
  const std::string& m = r.method;
  const bool update = m == "POST" || m == "PATCH";
  json body;
  if (update && !r.body.empty()) {
    body = json::parse(r.body, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/false);
    if (body.is_discarded()) return error_reply(400, "bad request body");
  }
  if (update && r.body.empty()) body = json::object();
  const size_t n = parts.size();
  if (n == 1 && parts[0] == "version" && m == "GET")
    return {200, json{{"version", TCPKIT_VERSION}}.dump()};
  if (n == 1 && parts[0] == "metrics" && m == "GET")
    return {200, registry_.metrics(), "text/plain; version=0.0.4; charset=utf-8"};
  if (n == 1 && parts[0] == "reset" && m == "POST") {
    registry_.reset();
    return {204, ""};
  }
  if (n == 1 && parts[0] == "populate" && m == "POST") {
    // Toxiproxy also takes {"proxies": [...]} here.
    const json& list = body.is_object() && body.contains("proxies") ? body["proxies"] : body;
    return reply(registry_.populate(list), 201);
  }
  if (n == 0 || parts[0] != "proxies" || n > 4 || (n >= 2 && parts[1].empty()))
    return error_reply(404, "not found");
  if (n == 1 && m == "GET") return {200, registry_.list().dump()};
  if (n == 1 && m == "POST") return reply(registry_.create(body), 201);
  const std::string& proxy = parts[1];
  if (n == 2 && m == "GET") return reply(registry_.get(proxy));
  if (n == 2 && update) return reply(registry_.update(proxy, body));
  if (n == 2 && m == "DELETE") return reply(registry_.remove(proxy));
  if (n >= 3 && parts[2] != "toxics") return error_reply(404, "not found");
  if (n == 3 && m == "GET") return reply(registry_.toxics(proxy));
  if (n == 3 && m == "POST") return reply(registry_.add_toxic(proxy, body));
  if (n == 4 && m == "GET") return reply(registry_.get_toxic(proxy, parts[3]));
  if (n == 4 && update) return reply(registry_.update_toxic(proxy, parts[3], body));
  if (n == 4 && m == "DELETE") return reply(registry_.remove_toxic(proxy, parts[3]));
  return error_reply(405, "method not allowed");
}

void RelayApiServer::respond(const TcpConnectionPtr& conn, const Reply& reply) {
  std::string response = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n"
      "Connection: close\r\n\r\n",
      reply.status, http_reason_phrase(reply.status), reply.content_type, reply.body.size());
  response += reply.body;
  conn->send(std::move(response));
  conn->shutdown();
}

}  // namespace tcpkit::cli

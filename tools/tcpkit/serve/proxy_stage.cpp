#include "serve/proxy_stage.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "serve/serve_session.h"
#include "tcpkit/buffer.h"
#include "tcpkit/proxy_protocol.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

ProxyStage::ProxyStage(const ServeOptions& options, HeaderCallback on_header)
    : options_(options), on_header_(std::move(on_header)) {}

void ProxyStage::begin(const TcpConnectionPtr& conn, ServeSession& session) {
  // A header from anyone else would let any client claim any address. On
  // a Unix socket file, its permissions have let only the proxy connect
  // (serve_cmd refuses an abstract socket, which has none).
  const Endpoint& proxy = conn->peer_endpoint();
  const bool trusted = proxy.is_unix() ||
                       std::any_of(options_.trusted_proxies.begin(), options_.trusted_proxies.end(),
                                   [&proxy](const Cidr& net) { return net.contains(proxy); });
  if (!trusted) {
    refuse(conn, session, "untrusted proxy", "untrusted proxy (not in --trusted-proxy)");
    return;
  }
  session.proxy_pending = true;
  arm_deadline(conn, session);
}

MessageCallback ProxyStage::message_callback(MessageCallback serve) {
  return [this, serve = std::move(serve)](const TcpConnectionPtr& c, Buffer& in) {
    if (pass(c, in)) serve(c, in);
  };
}

void ProxyStage::end(const TcpConnectionPtr& conn) {
  ServeSession* session = conn->context<ServeSession>();
  if (session == nullptr || session->proxy_timer == 0) return;
  conn->loop()->cancel(session->proxy_timer);
  session->proxy_timer = 0;
}

bool ProxyStage::pass(const TcpConnectionPtr& conn, Buffer& in) {
  ServeSession* session = conn->context<ServeSession>();
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
  end(conn);
  // --allow/--deny judge the client a header names. LOCAL is the proxy's
  // own health check, admitted by --trusted-proxy alone. UNKNOWN, UNSPEC and
  // UNIX name no client, yet some client may be behind them: skipping the
  // rules would let a denied client in through any such header, so they
  // judge the one address known, the proxy's.
  session->client = parsed.header.source;
  session->health_check = parsed.header.local;
  const bool judged = session->client || !parsed.header.local;
  const Endpoint& judged_peer = session->client ? *session->client : conn->peer_endpoint();
  if (judged && !options_.access.permits(judged_peer)) {
    in.retrieve_all();
    refuse(conn, *session, "not allowed", "not allowed");
    return false;
  }
  return on_header_(conn) && in.readable_bytes() > 0;
}

void ProxyStage::arm_deadline(const TcpConnectionPtr& conn, ServeSession& session) {
  const double seconds = options_.proxy_timeout_s;
  auto timeout = std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0));
  std::weak_ptr<TcpConnection> weak = conn;
  session.proxy_timer = conn->loop()->run_after(timeout, [weak, seconds] {
    TcpConnectionPtr c = weak.lock();
    ServeSession* s = c ? c->context<ServeSession>() : nullptr;
    if (s == nullptr) return;
    s->proxy_timer = 0;
    if (s->proxy_pending && !s->rejected) {
      reject(c, *s, std::make_error_code(std::errc::timed_out), "PROXY header timeout",
             fmt::format("PROXY header timeout ({:g} s)", seconds));
    }
  });
}

}  // namespace tcpkit::cli

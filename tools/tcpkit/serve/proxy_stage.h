// ProxyStage: the first stage of a `serve --proxy-protocol` connection. It
// waits for the PROXY v1/v2 header a load balancer sends before anything
// else, within --proxy-timeout; only --trusted-proxy peers may send one.
// Behind a proxy the accepted peer is the proxy itself, so the access list
// (--allow/--deny) is judged here, on the client the header names. Then it
// hands the connection on (to TLS, or to the mode) and steps aside: every
// later read passes through with one check.
//
// Owned by ServeApp, shared by every I/O loop; a connection's state is its
// ServeSession, touched in its own loop only.
#pragma once

#include <functional>

#include "serve/serve_options.h"
#include "tcpkit/callbacks.h"

namespace tcpkit::cli {

struct ServeSession;

class ProxyStage {
 public:
  // Runs once the header is in and its client passed the access list;
  // returns whether the bytes that follow the header go on to the mode
  // (false when a TLS layer takes them instead).
  using HeaderCallback = std::function<bool(const TcpConnectionPtr&)>;

  ProxyStage(const ServeOptions& options, HeaderCallback on_header);

  // A new connection: refused unless a trusted proxy, else the deadline.
  void begin(const TcpConnectionPtr& conn, ServeSession& session);
  // The message callback of every connection: `serve` sees only what
  // follows the header, and only once it is in.
  MessageCallback message_callback(MessageCallback serve);
  // The connection is gone: its deadline with it.
  void end(const TcpConnectionPtr& conn);

 private:
  // Consumes the header from `in`; true once it is in and bytes remain to serve.
  bool pass(const TcpConnectionPtr& conn, Buffer& in);
  // Closes `conn` if its header has not come in --proxy-timeout.
  void arm_deadline(const TcpConnectionPtr& conn, ServeSession& session);

  const ServeOptions& options_;
  HeaderCallback on_header_;
};

}  // namespace tcpkit::cli

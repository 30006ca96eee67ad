// TlsStage: TLS for `tcpkit serve` (--tls-cert/--tls-key). The layer is the
// connection's own (TcpConnection::start_tls: the handshake, its timeout,
// failures as close reasons); this stage decides where it starts. Without
// a PROXY header the server starts it before on_connection
// (configure_server()); behind a proxy it starts after the header, in the
// clear, and what follows the header is its first bytes (start()).
//
// Owned by ServeApp; start() runs in the connection's loop thread.
#pragma once

#include <memory>

#include "tcpkit/callbacks.h"
#include "tcpkit/tcp_server.h"
#include "tcpkit/tls_context.h"

namespace tcpkit::cli {

struct ServeSession;

class TlsStage {
 public:
  TlsStage(TlsContext context, bool after_proxy_header);

  const TlsContext& context() const { return *context_; }
  // Lets the server start TLS on every connection it accepts, unless that
  // waits for a PROXY header.
  void configure_server(ServerOptions& options) const;
  // Behind a proxy: starts TLS now; a failure closes `conn` (rejected).
  void start(const TcpConnectionPtr& conn, ServeSession& session) const;

 private:
  std::shared_ptr<const TlsContext> context_;
  bool after_proxy_header_;
};

}  // namespace tcpkit::cli

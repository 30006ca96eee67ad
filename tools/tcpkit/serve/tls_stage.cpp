#include "serve/tls_stage.h"

#include <fmt/core.h>

#include "serve/serve_session.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

TlsStage::TlsStage(TlsContext context, bool after_proxy_header)
    : context_(std::make_shared<const TlsContext>(std::move(context))),
      after_proxy_header_(after_proxy_header) {}

void TlsStage::configure_server(ServerOptions& options) const {
  if (!after_proxy_header_) options.tls = context_;
}

void TlsStage::start(const TcpConnectionPtr& conn, ServeSession& session) const {
  if (auto started = conn->start_tls(*context_); !started) {
    reject(conn, session, started.error().code(), "TLS session failed",
           fmt::format("TLS session failed ({})", started.error().code().message()));
  }
}

}  // namespace tcpkit::cli

#include "serve/serve_session.h"

#include <fmt/core.h>

#include "tcpkit/result.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

void reject(const TcpConnectionPtr& conn, ServeSession& session, std::error_code code,
            std::string label, std::string note) {
  session.rejected = true;
  session.proxy_pending = false;
  session.close_label = std::move(label);
  session.close_note = std::move(note);
  conn->force_close(code);
}

void refuse(const TcpConnectionPtr& conn, ServeSession& session, std::string label,
            std::string_view why) {
  reject(conn, session, make_error_code(Errc::not_allowed), std::move(label),
         fmt::format("refused: {}", why));
  session.refusal = true;
}

}  // namespace tcpkit::cli

// ConnectionOwner: what TcpServer and TcpClient, which create and own
// connections, may do to one that its users may not — hand it the shared
// callback table, start it, tear it down. Private to the library, so that
// TcpConnection's public header shows only what a user may call.
#pragma once

#include <memory>
#include <string_view>

#include "tcpkit/tcp_connection.h"

namespace tcpkit {

class ConnectionOwner {
 public:
  static void set_callbacks(TcpConnection& conn,
                            std::shared_ptr<const ConnectionCallbacks> callbacks) {
    conn.set_callbacks(std::move(callbacks));
  }
  static void established(TcpConnection& conn, const TlsContext* tls = nullptr,
                          std::string_view server_name = {}) {
    conn.connect_established(tls, server_name);
  }
  static void destroyed(TcpConnection& conn) { conn.connect_destroyed(); }
};

}  // namespace tcpkit

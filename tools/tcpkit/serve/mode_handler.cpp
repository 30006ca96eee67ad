#include "serve/mode_handler.h"

#include "serve/serve_observer.h"
#include "tcpkit/buffer.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

MessageCallback EchoMode::message_callback() {
  return [observer = observer_](const TcpConnectionPtr& c, Buffer& in) {
    observer->message_received();
    observer->message_sent();
    c->send(in);
  };
}

MessageCallback DiscardMode::message_callback() {
  return [observer = observer_](const TcpConnectionPtr&, Buffer& in) {
    observer->message_received();
    in.retrieve_all();
  };
}

}  // namespace tcpkit::cli

#include "serve/mode_handler.h"

#include "serve/serve_observer.h"
#include "tcpkit/buffer.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

// The first message goes back from here; from then on the connection
// echoes by itself, a peer that sends in bulk inside the kernel (where
// --splice says so), and each read sent back counts as a message, as here.
// Under TLS every byte is decrypted and encrypted again, so messages keep
// coming here.
MessageCallback EchoMode::message_callback() {
  return [observer = observer_, splice = splice_](const TcpConnectionPtr& c, Buffer& in) {
    observer->message_received();
    observer->message_sent();
    c->send(in);
    if (c->tls() != nullptr) return;
    auto echoing = c->start_echo(
        [observer](const TcpConnectionPtr&, size_t, bool) {
          observer->message_received();
          observer->message_sent();
        },
        splice);
    (void)echoing;  // under TLS only, excluded above
  };
}

MessageCallback DiscardMode::message_callback() {
  return [observer = observer_](const TcpConnectionPtr&, Buffer& in) {
    observer->message_received();
    in.retrieve_all();
  };
}

}  // namespace tcpkit::cli

#include "tcpkit/tls_connection.h"

#include <cassert>

#include "tcpkit/event_loop.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit {

Result<TlsConnectionPtr> TlsConnection::attach(const TcpConnectionPtr& conn, const TlsContext& context,
                                               std::string_view server_name) {
  auto tls = wrap(conn, context, server_name);
  if (!tls) return tls;
  // The connection owns this closure and the closure owns the TLS state:
  // no cycle, and no registry for the user to keep.
  conn->set_on_message([t = *tls](const TcpConnectionPtr&, Buffer& in) { t->on_ciphertext(in); });
  return tls;
}

Result<TlsConnectionPtr> TlsConnection::wrap(const TcpConnectionPtr& conn, const TlsContext& context,
                                             std::string_view server_name) {
  conn->loop()->assert_in_loop_thread();
  auto session = TlsSession::create(context, conn->peer_endpoint().to_string(), server_name);
  if (!session) return session.error();
  auto tls = std::make_shared<TlsConnection>(conn, std::move(*session));
  tls->flush();  // a client's hello
  return tls;
}

TlsConnection::TlsConnection(const TcpConnectionPtr& conn, TlsSession session)
    : connection_(conn), loop_(conn->loop()), session_(std::move(session)) {}

void TlsConnection::on_ciphertext(Buffer& in) {
  loop_->assert_in_loop_thread();
  if (session_.failed()) {
    in.retrieve_all();  // after an alert nothing more is meant for us
    return;
  }
  session_.feed_ciphertext(in.peek(), in.readable_bytes());
  in.retrieve_all();
  const bool was_done = session_.handshake_done();
  auto read = session_.read_plaintext(plaintext_);
  flush();  // handshake replies, held writes, or the alert of a failure
  auto self = shared_from_this();
  if (!read) {
    fail(read.error());
    return;
  }
  if (!was_done && session_.handshake_done()) {
    if (on_handshake_) on_handshake_(self);
    if (shutdown_requested_) shutdown_in_loop();
  }
  if (plaintext_.readable_bytes() > 0) {
    if (on_message_) {
      on_message_(self, plaintext_);
    } else {
      plaintext_.retrieve_all();
    }
  }
  plaintext_.release_if_empty();
  if (session_.peer_closed() && !peer_close_reported_) {
    peer_close_reported_ = true;
    if (on_peer_closed_) {
      on_peer_closed_(self);
    } else {
      shutdown_in_loop();
    }
  }
}

void TlsConnection::send(std::string_view plaintext) {
  if (loop_->is_in_loop_thread()) {
    send_in_loop(plaintext);
    return;
  }
  loop_->queue_in_loop([self = shared_from_this(), data = std::string(plaintext)] {
    self->send_in_loop(data);
  });
}

void TlsConnection::send_in_loop(std::string_view plaintext) {
  loop_->assert_in_loop_thread();
  session_.write_plaintext(plaintext);
  flush();
}

void TlsConnection::shutdown() {
  if (loop_->is_in_loop_thread()) {
    shutdown_in_loop();
    return;
  }
  loop_->queue_in_loop([self = shared_from_this()] { self->shutdown_in_loop(); });
}

void TlsConnection::shutdown_in_loop() {
  loop_->assert_in_loop_thread();
  shutdown_requested_ = true;
  // A FIN now would cut the handshake short and lose the held writes;
  // on_ciphertext() comes back here once the handshake is done.
  if (!session_.handshake_done() && !session_.failed()) return;
  session_.shutdown();
  flush();
  if (auto conn = connection_.lock()) conn->shutdown();
}

void TlsConnection::flush() {
  if (!session_.has_ciphertext()) return;
  auto conn = connection_.lock();
  if (!conn) return;
  Buffer out;
  session_.take_ciphertext(out);
  conn->send(out);
}

void TlsConnection::fail(const Error& error) {
  if (on_error_) on_error_(shared_from_this(), error);
  if (auto conn = connection_.lock()) conn->shutdown();
}

}  // namespace tcpkit

/// \file
/// TlsConnection: TLS on one TcpConnection of the reactor.
///
/// attach() wraps an established connection: from then on the connection's
/// on_message carries ciphertext into this object, which decrypts it and
/// hands plaintext to its own on_message; send() encrypts and queues on the
/// connection. Backpressure, half-close and idle timeouts stay the
/// TcpConnection's (they apply to the ciphertext).
///
/// ```
///   server.set_on_connection([&](const TcpConnectionPtr& conn) {
///     if (!conn->connected()) return;
///     auto tls = TlsConnection::attach(conn, context);
///     if (!tls) { conn->force_close(); return; }
///     (*tls)->set_on_message([](const TlsConnectionPtr& t, Buffer& in) { t->send(in.retrieve_all_as_string()); });
///   });
/// ```
///
/// Ownership: the TcpConnection keeps its TlsConnection alive (through the
/// on_message it was given); the TlsConnection refers back only weakly, so
/// the two go away together. Users may keep TlsConnectionPtrs (a chat room's
/// members) like TcpConnectionPtrs. send() and shutdown() are safe from any
/// thread; everything else, and every callback, runs in the connection's
/// loop thread.
///
/// A TLS failure (a rejected certificate, a peer not speaking TLS) is
/// reported through on_error; the alert that tells the peer is sent and the
/// connection is shut down (its idle timeout bounds a peer that then stays).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "tcpkit/buffer.h"
#include "tcpkit/callbacks.h"
#include "tcpkit/result.h"
#include "tcpkit/tls_context.h"
#include "tcpkit/tls_session.h"

namespace tcpkit {

class EventLoop;
class TlsConnection;
using TlsConnectionPtr = std::shared_ptr<TlsConnection>;

class TlsConnection : public std::enable_shared_from_this<TlsConnection> {
 public:
  /// Plaintext arrived; consume whole messages, the rest is kept for next time.
  using MessageCallback = std::function<void(const TlsConnectionPtr&, Buffer&)>;
  using EventCallback = std::function<void(const TlsConnectionPtr&)>;
  using ErrorCallback = std::function<void(const TlsConnectionPtr&, const Error&)>;

  /// In conn's loop thread, while it is connected (e.g. in on_connection),
  /// never from inside conn's own on_message (it replaces that function).
  /// A client sends its hello at once. A client
  /// verifies `server_name` when given, else the context's server_name().
  static Result<TlsConnectionPtr> attach(const TcpConnectionPtr& conn, const TlsContext& context,
                                         std::string_view server_name = {});
  /// Like attach(), but leaves the connection's on_message alone: the caller
  /// keeps the TlsConnectionPtr and hands ciphertext to on_ciphertext()
  /// itself — after a PROXY header, say, which comes before the TLS hello.
  static Result<TlsConnectionPtr> wrap(const TcpConnectionPtr& conn, const TlsContext& context,
                                       std::string_view server_name = {});

  /// Set these right after attach(), in the same loop-thread call.
  void set_on_handshake(EventCallback cb) { on_handshake_ = std::move(cb); }
  void set_on_message(MessageCallback cb) { on_message_ = std::move(cb); }
  void set_on_error(ErrorCallback cb) { on_error_ = std::move(cb); }
  /// The peer sent close_notify. Without this callback we answer with our
  /// own close_notify and FIN (shutdown()).
  void set_on_peer_closed(EventCallback cb) { on_peer_closed_ = std::move(cb); }

  /// Loop thread: what attach() routes the connection's bytes to. Consumes `in`.
  void on_ciphertext(Buffer& in);

  /// Any thread. Plaintext, sent in call order per thread; held until the
  /// handshake completes. Dropped after shutdown() or a failure.
  void send(std::string_view plaintext);
  /// Any thread. close_notify, then FIN once the output drains (after the
  /// handshake, when that is still running).
  void shutdown();

  /// Loop thread.
  bool handshake_done() const { return session_.handshake_done(); }
  const TlsSession& session() const { return session_; }
  /// The TCP connection, or null once it has been destroyed.
  TcpConnectionPtr connection() const { return connection_.lock(); }
  EventLoop* loop() const { return loop_; }

  /// Public for make_shared; use attach().
  TlsConnection(const TcpConnectionPtr& conn, TlsSession session);

 private:
  void send_in_loop(std::string_view plaintext);
  void shutdown_in_loop();
  /// Moves the session's ciphertext to the TCP connection.
  void flush();
  void fail(const Error& error);

  std::weak_ptr<TcpConnection> connection_;
  EventLoop* loop_;
  TlsSession session_;
  Buffer plaintext_;
  bool shutdown_requested_ = false;
  bool peer_close_reported_ = false;

  EventCallback on_handshake_;
  MessageCallback on_message_;
  ErrorCallback on_error_;
  EventCallback on_peer_closed_;
};

}  // namespace tcpkit

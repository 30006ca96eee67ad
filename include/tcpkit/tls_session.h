/// \file
/// TlsSession: the TLS state of one connection, on a pair of memory BIOs.
///
/// OpenSSL never touches the socket: the caller feeds it the bytes that came
/// from the peer and takes the bytes that must go to the peer. That is what
/// lets TLS ride on the reactor (TcpConnection owns the descriptor and its
/// buffers) as well as on a blocking socket with poll(). The handshake runs
/// inside read_plaintext(); writes made before it completes are held and
/// sent, in order, once it has.
///
/// ```
///   feed_ciphertext(bytes from the socket)
///   read_plaintext(out)       decrypts what it can; an Error ends the session
///   write_plaintext(data)     encrypts (or holds until the handshake is done)
///   take_ciphertext()         what must be sent to the socket now
/// ```
///
/// Call take_ciphertext() after every read_plaintext(), write_plaintext() and
/// shutdown(), and after create() on a client (its hello is ready then).
///
/// Owned by whoever drives the connection (TcpConnection, TlsStream); not
/// thread-safe. Move-only.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tcpkit/buffer.h"
#include "tcpkit/result.h"
#include "tcpkit/tls_context.h"

namespace tcpkit {

class TlsSession {
 public:
  /// A session in the context's role. `peer` names the other side in error
  /// messages ("TLS handshake with 127.0.0.1:443: ..."). A client verifies
  /// `server_name` when it is given, else the context's server_name().
  static Result<TlsSession> create(const TlsContext& context, std::string peer,
                                   std::string_view server_name = {});

  TlsSession(TlsSession&& other) noexcept;
  TlsSession& operator=(TlsSession&& other) noexcept;
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;
  ~TlsSession();

  /// Bytes received from the peer, in order. Kept until read_plaintext().
  void feed_ciphertext(const char* data, size_t len);
  void feed_ciphertext(std::string_view data) { feed_ciphertext(data.data(), data.size()); }

  /// Advances the handshake and appends every byte that can be decrypted to
  /// `out`. Ok when it merely needs more ciphertext. An Error (the
  /// certificate was rejected, the peer is not speaking TLS, a record was
  /// forged) is final: the session stays failed, take_ciphertext() holds the
  /// alert that tells the peer, and the connection should be closed. `out`
  /// still holds what the records before the bad one carried: they
  /// authenticated, so they are the peer's data.
  Result<void> read_plaintext(Buffer& out);

  /// Encrypts `data`, or holds it while the handshake runs. Ignored after
  /// shutdown() or a failure: those bytes could no longer reach the peer.
  void write_plaintext(std::string_view data);

  /// Moves out what must be sent to the peer now (handshake, data, alerts).
  void take_ciphertext(Buffer& out);
  std::string take_ciphertext();
  bool has_ciphertext() const;

  /// Queues close_notify (after the handshake and held writes, if those are
  /// still pending). Sending FIN afterwards is the caller's choice.
  void shutdown();

  /// The handshake completed; still true after a later failure.
  bool handshake_done() const;
  /// The peer sent close_notify: it will send no more data.
  bool peer_closed() const;
  bool failed() const;
  /// Plaintext written before the handshake finished, held until it does:
  /// part of what a connection counts toward its high-water mark.
  size_t held_bytes() const;
  /// "TLSv1.3", and the cipher suite: for logs, once the handshake is done.
  std::string_view protocol_version() const;
  std::string_view cipher() const;
  /// Server: the name the client asked for (SNI); empty when it sent none.
  std::string_view requested_server_name() const;

 private:
  struct State;
  explicit TlsSession(std::unique_ptr<State> state);
  /// Records the first failure; the session stays failed.
  void fail(Error error);
  Error handshake_error();
  /// Sends the writes held during the handshake, then a requested close_notify.
  void finish_handshake();
  void encrypt(std::string_view data);

  std::unique_ptr<State> s_;
};

}  // namespace tcpkit

// ConnectStream: the byte stream `tcpkit connect` talks over — the TCP
// socket itself, or TLS on it (--tls) through the library's TlsSession, the
// same TLS code the reactor uses. The sessions see plaintext either way.
//
// With TLS, poll() on the socket is not the whole truth: decrypted bytes may
// already wait here, and bytes from the socket may not make a whole record
// yet. So the sessions ask wait_readable() instead of polling the socket,
// and recv() may report "nothing yet" (resource_unavailable_try_again).
// One thread; move-only.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tcpkit/buffer.h"
#include "tcpkit/tcp_stream.h"
#include "tcpkit/tls_session.h"

namespace tcpkit::cli {

class ConnectStream {
 public:
  explicit ConnectStream(TcpStream stream) : stream_(std::move(stream)) {}
  ConnectStream(TcpStream stream, TlsSession session)
      : stream_(std::move(stream)), tls_(std::move(session)) {}

  // TLS: runs the handshake until it is done or `timeout` passes; the
  // Error is the session's (certificate rejected...), errc::timed_out or
  // Errc::peer_closed. Plain TCP: nothing to do.
  Result<void> handshake(std::chrono::milliseconds timeout);

  // 1 when recv() has something to say (data, the end, an error), 0 after
  // timeout_ms (-1: no limit), or -errno when poll() fails.
  int wait_readable(int timeout_ms);
  // True when recv() answers without touching the socket.
  bool has_buffered_input() const;
  // Plaintext received: a byte count, 0 at the end of the stream (FIN, or
  // TLS close_notify), or errc::resource_unavailable_try_again when what
  // arrived held no data yet (part of a record, a session ticket).
  Result<size_t> recv(char* buf, size_t len);

  // Blocking: every byte is handed to the kernel.
  Result<void> send_all(std::string_view data);
  // Non-blocking: takes what the kernel accepts now (with TLS: all of
  // `data` once earlier ciphertext is out) and returns how much it took.
  Result<size_t> send_some(std::string_view data);
  // TLS ciphertext that the kernel has not accepted yet (send_some).
  bool has_pending_output() const { return !pending_.empty(); }
  Result<void> flush_pending();

  // close_notify (TLS), then FIN; we can still receive.
  Result<void> shutdown_write();
  // The end of the conversation: close_notify (TLS) if not sent yet, as a
  // best effort that never blocks, then close the socket.
  void close();

  int fd() const { return stream_.fd(); }
  Endpoint peer_endpoint() const { return stream_.peer_endpoint(); }

 private:
  // One read from the socket into the session; 0 at EOF.
  Result<size_t> read_ciphertext();
  // Moves the session's ciphertext into pending_.
  void collect_ciphertext();

  TcpStream stream_;
  std::optional<TlsSession> tls_;
  Buffer plaintext_;     // decrypted, not handed out yet
  std::string pending_;  // encrypted, not accepted by the kernel yet
  std::vector<char> read_buffer_;
  bool eof_ = false;
};

}  // namespace tcpkit::cli

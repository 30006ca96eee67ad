/// \file
/// TcpStream: one connected TCP or Unix-domain socket used with blocking calls.
///
/// The tutorial's client flow, one call per step: connect(), send_all(),
/// recv() (0 bytes means the peer closed), shutdown_write() for a half-close,
/// and destruction closes. Owns its descriptor; move-only. One thread at a
/// time, except that one thread may send while another receives (not with
/// TLS, whose state both directions share).
///
/// start_tls() puts TLS inside the stream, as TcpConnection::start_tls does
/// in the reactor: the same calls then carry plaintext, so code that talks
/// over a stream never asks whether it is encrypted.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string_view>

#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class TlsContext;
class TlsSession;

class TcpStream {
 public:
  static constexpr std::chrono::milliseconds kNoTimeout{-1};

  TcpStream();
  /// Adopts a connected socket (e.g. from accept) and records its peer.
  explicit TcpStream(UniqueFd fd);
  /// Adopts a connected socket whose peer is already known (accept() names a
  /// Unix client by the listener's path and its credentials).
  TcpStream(UniqueFd fd, Endpoint peer);
  TcpStream(TcpStream&& other) noexcept;
  TcpStream& operator=(TcpStream&& other) noexcept;
  ~TcpStream();

  /// Connects within `timeout` (kNoTimeout: the kernel's own, often minutes).
  static Result<TcpStream> connect(const Endpoint& peer,
                                   std::chrono::milliseconds timeout = kNoTimeout);
  /// Resolves "host:port" and tries each address in turn until one answers;
  /// the error of the last attempt is returned when none does.
  static Result<TcpStream> connect(std::string_view host_port,
                                   std::chrono::milliseconds timeout = kNoTimeout);

  /// Sends every byte, looping over partial writes and EINTR. Never raises
  /// SIGPIPE: a closed peer is an EPIPE error.
  Result<void> send_all(const void* data, size_t len);
  Result<void> send_all(std::string_view data) { return send_all(data.data(), data.size()); }

  /// Receives up to `len` bytes. 0 means the peer closed its side (EOF) —
  /// the tutorial's "recv returns 0 bytes". A receive timeout (set_recv_timeout)
  /// is reported as std::errc::resource_unavailable_try_again. With TLS
  /// one call makes one read from the socket, and when that brought no data
  /// (part of a record, a session ticket) it returns the same error: call
  /// again, or wait_readable() first. A TLS peer ends with close_notify
  /// before its FIN; a FIN without one is Errc::tls_truncated, since an
  /// attacker on the path can cut the stream there (RFC 8446, 6.1).
  /// A TLS receive never waits to send: ciphertext that the kernel does not
  /// take at once stays pending (has_pending_output()).
  Result<size_t> recv(void* buf, size_t len);
  /// Receives exactly `len` bytes; EOF before that is Errc::peer_closed.
  Result<void> recv_exact(void* buf, size_t len);

  /// Half-close: sends FIN (after TLS close_notify); we can still receive
  /// what the peer sends. After a TLS peer's close_notify, a socket that the
  /// peer has closed as well (our close_notify met a reset, or shutdown()
  /// finds the connection gone) is no error: both sides ended cleanly.
  Result<void> shutdown_write();

  /// The end of a client that has sent all it means to: half-closes (once;
  /// shutdown_write()), then reads and drops what the peer still sends
  /// until the peer has acknowledged every byte sent (not the FIN, nor a
  /// TLS close_notify the half-close adds: a peer that closed before them
  /// has taken all the rest), within `timeout`. Closing with bytes unread would make the kernel
  /// reset the connection and drop what it had not sent yet. The Error is connection_reset when the
  /// peer reset before it took all, timed_out when bytes were still unacknowledged after `timeout`,
  /// or shutdown's. A Unix socket returns after the half-close: its bytes are with the peer.
  Result<void> finish_sending(std::chrono::milliseconds timeout);

  /// TLS over this connected stream, in the role of `context` (a client
  /// verifies `server_name`, else the context's): runs the handshake within
  /// `timeout`. The Error is the TLS library's (a certificate rejected),
  /// errc::timed_out or Errc::peer_closed; a failed stream should be closed.
  Result<void> start_tls(const TlsContext& context, std::string_view server_name = {},
                         std::chrono::milliseconds timeout = kNoTimeout);
  /// The TLS layer (version, cipher), or null without one.
  const TlsSession* tls() const;

  /// For a thread that waits on more than this stream (stdin and the
  /// socket, say). 1 when recv() has something to say (data, the end, an
  /// error), 0 after timeout_ms (-1: no limit), or -errno when poll()
  /// fails. With TLS, decrypted bytes may already wait here, so poll() on
  /// fd() alone is not the whole truth: has_buffered_input() says so.
  int wait_readable(int timeout_ms);
  bool has_buffered_input() const;
  /// What wait() found ready; all false after its timeout.
  struct Ready {
    bool readable = false;  ///< recv() has something to say, buffered TLS bytes included
    bool writable = false;  ///< send_some() can take more (only when asked for)
    bool other = false;     ///< `other_fd` is readable, at its end, or failed
    /// After the end of input: the connection can carry nothing more either
    /// way (reset, or both directions closed); pending_error() says whether
    /// it failed.
    bool hangup = false;
  };
  /// Waits for this stream and one more descriptor at once, such as stdin
  /// for a client that copies it to the peer as nc does: readable, and
  /// writable when `writable`; `other_fd` < 0 waits for the stream alone.
  /// Once recv() has returned the end of input (0), the stream is no longer
  /// watched for reading, so that a peer that has finished but still reads
  /// (the half-close of nc -N) does not wake the wait again and again; a
  /// reset after that is reported as `hangup`.
  /// Retries EINTR within `timeout` (kNoTimeout: none); the Error is poll()'s.
  Result<Ready> wait(std::chrono::milliseconds timeout, bool writable = false, int other_fd = -1);
  /// True once recv() has returned the end of input.
  bool input_ended() const { return input_ended_; }
  /// The error a failed connection holds and has not reported through a
  /// call yet (SO_ERROR, which reading clears); empty when there is none.
  std::error_code pending_error();
  /// Non-blocking: takes what the kernel accepts now (with TLS: all of
  /// `data` once earlier ciphertext is out) and returns how much it took.
  Result<size_t> send_some(std::string_view data);
  /// TLS ciphertext that the kernel has not accepted yet (send_some), and
  /// a non-blocking attempt to hand it over.
  bool has_pending_output() const;
  Result<void> flush_pending();

  /// TCP_NODELAY / SO_KEEPALIVE; on a Unix socket, where neither means
  /// anything (TCP_NODELAY fails there), they do nothing and succeed.
  Result<void> set_nodelay(bool on);
  Result<void> set_keepalive(bool on);
  /// SO_RCVTIMEO / SO_SNDTIMEO. kNoTimeout (or 0, the kernel's convention)
  /// waits forever again.
  Result<void> set_recv_timeout(std::chrono::milliseconds timeout);
  Result<void> set_send_timeout(std::chrono::milliseconds timeout);

  Endpoint local_endpoint() const;
  /// The address connected to, recorded at construction: it stays known after
  /// the peer resets, when getpeername() would fail with ENOTCONN.
  Endpoint peer_endpoint() const { return peer_; }
  int fd() const { return fd_.get(); }
  bool is_open() const { return fd_.valid(); }
  UniqueFd release_fd() { return std::move(fd_); }
  /// Closes the socket, after a best-effort TLS close_notify that never blocks.
  void close();

 private:
  struct TlsLayer;
  std::string where() const;
  /// Every byte to the socket, blocking.
  Result<void> send_raw(const char* data, size_t len);
  Result<void> tls_send_all(std::string_view data);
  Result<size_t> plain_recv(void* buf, size_t len);
  Result<size_t> tls_recv(void* buf, size_t len);
  /// One read from the socket into the TLS layer; 0 at EOF.
  Result<size_t> read_ciphertext();
  /// Sends the TLS layer's output, blocking.
  Result<void> send_ciphertext();

  UniqueFd fd_;
  Endpoint peer_;
  std::unique_ptr<TlsLayer> tls_;  ///< null: plain TCP
  bool input_ended_ = false;       ///< recv() has returned the end of input
  bool output_ended_ = false;      ///< shutdown_write() has succeeded
  size_t end_bytes_ = 0;           ///< what the half-close queued (FIN, close_notify)
};

}  // namespace tcpkit

/// \file
/// TcpStream: one connected TCP or Unix-domain socket used with blocking calls.
///
/// The tutorial's client flow, one call per step: connect(), send_all(),
/// recv() (0 bytes means the peer closed), shutdown_write() for a half-close,
/// and destruction closes. Owns its descriptor; move-only. One thread at a
/// time, except that one thread may send while another receives.
#pragma once

#include <chrono>
#include <cstddef>
#include <string_view>

#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class TcpStream {
 public:
  static constexpr std::chrono::milliseconds kNoTimeout{-1};

  TcpStream() = default;
  /// Adopts a connected socket (e.g. from accept) and records its peer.
  explicit TcpStream(UniqueFd fd);
  /// Adopts a connected socket whose peer is already known (accept() names a
  /// Unix client by the listener's path and its credentials).
  TcpStream(UniqueFd fd, Endpoint peer) : fd_(std::move(fd)), peer_(std::move(peer)) {}

  /// Connects within `timeout` (kNoTimeout: the kernel's own, often minutes).
  static Result<TcpStream> connect(const Endpoint& peer, std::chrono::milliseconds timeout = kNoTimeout);
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
  /// is reported as std::errc::resource_unavailable_try_again.
  Result<size_t> recv(void* buf, size_t len);
  /// Receives exactly `len` bytes; EOF before that is Errc::peer_closed.
  Result<void> recv_exact(void* buf, size_t len);

  /// Half-close: sends FIN; we can still receive what the peer sends.
  Result<void> shutdown_write();

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
  void close() { fd_.reset(); }

 private:
  std::string where() const;
  UniqueFd fd_;
  Endpoint peer_;
};

}  // namespace tcpkit

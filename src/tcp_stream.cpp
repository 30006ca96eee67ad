#include "tcpkit/tcp_stream.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "sys.h"
#include "tcpkit/buffer.h"
#include "tcpkit/tls_session.h"

namespace tcpkit {

// The TLS state of a stream that has it.
struct TcpStream::TlsLayer {
  explicit TlsLayer(TlsSession s) : session(std::move(s)) {}
  TlsSession session;
  Buffer plaintext;        // decrypted, not handed out yet
  std::string pending;     // encrypted, not accepted by the kernel yet (send_some)
  std::vector<char> wire;  // one read from the socket
  bool eof = false;
  /// The layer failed after `plaintext` had authenticated: the error
  /// comes once the plaintext has been handed out.
  std::optional<Error> failed;
};

TcpStream::TcpStream() = default;
TcpStream::TcpStream(UniqueFd fd) : fd_(std::move(fd)), peer_(sys::peer_endpoint(fd_.get())) {}
TcpStream::TcpStream(UniqueFd fd, Endpoint peer) : fd_(std::move(fd)), peer_(std::move(peer)) {}
TcpStream::TcpStream(TcpStream&& other) noexcept = default;
TcpStream& TcpStream::operator=(TcpStream&& other) noexcept = default;
TcpStream::~TcpStream() = default;

Result<TcpStream> TcpStream::connect(const Endpoint& peer, std::chrono::milliseconds timeout) {
  const std::string what = "connect " + peer.to_string();
  auto fd = sys::tcp_socket(peer.family(), /*nonblocking=*/true, peer);
  if (!fd) return fd.error();
  int rc = sys::connect(fd->get(), peer);
  if (rc == -EINPROGRESS) {
    int ready = sys::poll_one(fd->get(), POLLOUT, timeout);
    if (ready == 0) return Error::from_errno(ETIMEDOUT, what);
    if (ready < 0) return Error::from_errno(-ready, what);
    rc = -sys::socket_error(fd->get());
  }
  if (rc < 0) return Error::from_errno(-rc, what);
  if (auto r = sys::set_nonblocking(fd->get(), false); !r) return r.error();
  if (peer.is_unix()) return TcpStream(std::move(*fd), peer);
  return TcpStream(std::move(*fd));
}

Result<TcpStream> TcpStream::connect(std::string_view host_port,
                                     std::chrono::milliseconds timeout) {
  auto addresses = Endpoint::resolve(host_port);
  if (!addresses) return addresses.error();
  Error last;
  for (const auto& ep : *addresses) {
    auto stream = connect(ep, timeout);
    if (stream) return stream;
    last = stream.error();
  }
  return last;
}

// Error messages name the peer from the recorded address: after a reset the
// kernel no longer reports it, and "send to 0.0.0.0:0" would mislead.
std::string TcpStream::where() const {
  return peer_.to_string();
}

Result<void> TcpStream::send_all(const void* data, size_t len) {
  if (tls_) return tls_send_all(std::string_view(static_cast<const char*>(data), len));
  return send_raw(static_cast<const char*>(data), len);
}

Result<void> TcpStream::send_raw(const char* p, size_t len) {
  while (len > 0) {
    ssize_t n = sys::send(fd_.get(), p, len);
    if (n == -EINTR) continue;
    if (n < 0) return Error::from_errno(static_cast<int>(-n), "send to " + where());
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

Result<size_t> TcpStream::recv(void* buf, size_t len) {
  auto n = tls_ ? tls_recv(buf, len) : plain_recv(buf, len);
  if (n && *n == 0 && len > 0) input_ended_ = true;
  return n;
}

Result<size_t> TcpStream::plain_recv(void* buf, size_t len) {
  for (;;) {
    ssize_t n = sys::read(fd_.get(), buf, len);
    if (n == -EINTR) continue;
    if (n == -EWOULDBLOCK)
      return Error::from_errno(EAGAIN, "recv from " + where() + " (timed out)");
    if (n < 0) return Error::from_errno(static_cast<int>(-n), "recv from " + where());
    return static_cast<size_t>(n);
  }
}

Result<void> TcpStream::recv_exact(void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    auto n = recv(p, len);
    if (!n && n.error() == std::errc::resource_unavailable_try_again && tls_)
      continue;  // no data yet
    if (!n) return n.error();
    if (*n == 0) return Error(Errc::peer_closed, "recv from " + where());
    p += *n;
    len -= *n;
  }
  return {};
}

namespace {

// Bytes sent that the peer's kernel has not acknowledged yet (SIOCOUTQ),
// or -1 where the socket cannot say.
int unacknowledged_bytes(int fd) {
  int n = 0;
  return ::ioctl(fd, SIOCOUTQ, &n) < 0 ? -1 : n;
}

}  // namespace

// After the peer's clean close (its close_notify) the peer may have closed
// its socket too, as TLS 1.3 allows: our close_notify then meets a reset,
// and shutdown() finds the connection gone. That is the end both sides
// meant, not a failure (the reactor's rule too: TcpConnection::handle_close).
Result<void> TcpStream::shutdown_write() {
  // What the end adds to the bytes on their way (close_notify, the FIN):
  // finish_sending() need not wait for the peer to acknowledge them.
  size_t end_bytes = 0;
  auto ended = [&] {
    output_ended_ = true;
    end_bytes_ = end_bytes;
    return Result<void>{};
  };
  const bool peer_done = tls_ && tls_->session.peer_closed();
  auto gone = [peer_done](const std::error_code& code) {
    return peer_done && (code == std::errc::broken_pipe || code == std::errc::connection_reset ||
                         code == std::errc::not_connected);
  };
  if (tls_) {
    tls_->session.shutdown();  // close_notify before the FIN
    if (tls_->session.has_ciphertext()) {
      const std::string alert = tls_->session.take_ciphertext();
      end_bytes += alert.size();
      tls_->pending += alert;
    }
    if (auto sent = send_ciphertext(); !sent) {
      if (gone(sent.error().code())) return ended();
      return sent;
    }
  }
  if (int rc = sys::shutdown_write(fd_.get()); rc < 0) {
    auto failed = Error::from_errno(-rc, "shutdown " + where());
    if (gone(failed.code())) return ended();
    end_bytes_ = end_bytes;  // the close_notify went: finish_sending() tells it from data
    return failed;
  }
  end_bytes += 1;  // the FIN takes a sequence number of its own
  return ended();
}

Result<void> TcpStream::finish_sending(std::chrono::milliseconds timeout) {
  if (peer_.is_unix()) {  // what was sent is with the peer already
    if (!output_ended_) (void)shutdown_write();
    return {};
  }
  const std::string what = "finish sending to " + where();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto time_left = [&] {
    return std::chrono::ceil<std::chrono::milliseconds>(deadline -
                                                        std::chrono::steady_clock::now());
  };
  // TLS ciphertext the kernel has not taken yet goes first, without
  // blocking past the deadline (shutdown_write() would send it blocking).
  while (!output_ended_ && has_pending_output()) {
    if (auto flushed = flush_pending(); !flushed) return flushed.error();
    if (!has_pending_output()) break;
    if (time_left().count() <= 0) return Error(std::make_error_code(std::errc::timed_out), what);
    if (int ready = sys::poll_one(fd_.get(), POLLOUT, time_left()); ready < 0)
      return Error::from_errno(-ready, what);
  }
  // A half-close that fails finds the connection gone: all is well if the
  // peer had acknowledged every byte (a server that closed once it had
  // answered), not if some were still on their way.
  if (!output_ended_) {
    if (auto shut = shutdown_write(); !shut) {
      if (unacknowledged_bytes(fd_.get()) <= static_cast<int>(end_bytes_)) return {};
      const int error = sys::socket_error(fd_.get());
      return Error::from_errno(error != 0 ? error : ECONNRESET, what);
    }
  }
  // The half-close queued our FIN (and TLS's close_notify) behind the
  // user's bytes: once only they are left, everything the user sent has
  // arrived. A peer that closed before reading them resets, which costs
  // the user nothing.
  const int protocol = static_cast<int>(end_bytes_);
  // An acknowledgement wakes no poll(): look again this often.
  constexpr std::chrono::milliseconds kRecheck{10};
  char scratch[16384];
  bool peer_finished = input_ended_;
  for (;;) {
    const int unacknowledged = unacknowledged_bytes(fd_.get());
    if (unacknowledged <= protocol) return {};
    if (int error = sys::socket_error(fd_.get()); error != 0) return Error::from_errno(error, what);
    const auto left = time_left();
    if (left.count() <= 0) return Error(std::make_error_code(std::errc::timed_out), what);
    // After the peer's FIN the socket stays readable: only wait then.
    int ready = sys::poll_one(fd_.get(), peer_finished ? 0 : POLLIN, std::min(left, kRecheck));
    if (ready < 0) return Error::from_errno(-ready, what);
    if (ready == 0) continue;
    if (peer_finished) {
      ::poll(nullptr, 0, static_cast<int>(kRecheck.count()));
      continue;
    }
    ssize_t n = sys::read(fd_.get(), scratch, sizeof scratch);
    if (n == -EINTR || n == -EAGAIN) continue;
    if (n < 0) return Error::from_errno(static_cast<int>(-n), what);
    if (n == 0) peer_finished = true;
  }
}

Result<void> TcpStream::set_nodelay(bool on) {
  if (peer_.is_unix()) return {};
  return sys::set_int_option(fd_.get(), IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0, "TCP_NODELAY");
}
Result<void> TcpStream::set_keepalive(bool on) {
  if (peer_.is_unix()) return {};
  return sys::set_int_option(fd_.get(), SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0, "SO_KEEPALIVE");
}
Result<void> TcpStream::set_recv_timeout(std::chrono::milliseconds timeout) {
  return sys::set_timeval_option(fd_.get(), SO_RCVTIMEO, timeout, "SO_RCVTIMEO");
}
Result<void> TcpStream::set_send_timeout(std::chrono::milliseconds timeout) {
  return sys::set_timeval_option(fd_.get(), SO_SNDTIMEO, timeout, "SO_SNDTIMEO");
}

Endpoint TcpStream::local_endpoint() const {
  return sys::local_endpoint(fd_.get());
}

// ---- TLS ----------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kReadSize = size_t{64} * 1024;
const std::error_code kNothingYet = std::make_error_code(std::errc::resource_unavailable_try_again);

}  // namespace

Result<void> TcpStream::start_tls(const TlsContext& context, std::string_view server_name,
                                  std::chrono::milliseconds timeout) {
  const std::string where_to = "TLS handshake with " + where();
  auto session = TlsSession::create(context, where(), server_name);
  if (!session) return session.error();
  tls_ = std::make_unique<TlsLayer>(std::move(*session));
  const bool forever = timeout.count() < 0;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto sent = send_ciphertext(); !sent) return Error(sent.error().code(), where_to);
    if (tls_->session.handshake_done()) return {};
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    int ready = sys::poll_one(fd_.get(), POLLIN,
                              forever ? kNoTimeout : std::max(left, std::chrono::milliseconds(0)));
    if (ready < 0) return Error::from_errno(-ready, where_to);
    if (ready == 0) return Error(std::make_error_code(std::errc::timed_out), where_to);
    auto n = read_ciphertext();
    if (!n) return Error(n.error().code(), where_to);
    if (*n == 0) return Error(Errc::peer_closed, where_to);
    if (auto read = tls_->session.read_plaintext(tls_->plaintext); !read) {
      (void)send_ciphertext();  // best effort: the alert tells the peer why we hang up
      return read.error();
    }
  }
}

const TlsSession* TcpStream::tls() const {
  return tls_ ? &tls_->session : nullptr;
}

bool TcpStream::has_buffered_input() const {
  return tls_ && (tls_->plaintext.readable_bytes() > 0 || tls_->eof || tls_->session.peer_closed());
}

Result<TcpStream::Ready> TcpStream::wait(std::chrono::milliseconds timeout, bool writable,
                                         int other_fd) {
  constexpr short kReadable = POLLIN | POLLHUP | POLLERR | POLLNVAL;
  // Decrypted bytes already waiting: the socket may have nothing more to
  // say, so look without waiting.
  const bool buffered = !input_ended_ && has_buffered_input();
  // After the end of input the socket stays readable (recv() says 0 again
  // and again): poll() then reports only what it always reports, an error
  // or a hangup.
  const short read_events = input_ended_ ? 0 : POLLIN;
  pollfd fds[2] = {
      {fd_.get(), static_cast<short>(read_events | (writable ? POLLOUT : 0)), 0},
      {other_fd, POLLIN, 0},  // a negative descriptor is skipped
  };
  int rc = sys::poll(fds, other_fd >= 0 ? 2 : 1, buffered ? std::chrono::milliseconds(0) : timeout);
  if (rc < 0) return Error::from_errno(-rc, "poll");
  const short revents = fds[0].revents;
  Ready ready;
  ready.readable = buffered || (!input_ended_ && (revents & kReadable) != 0);
  ready.writable = (revents & (POLLOUT | POLLERR)) != 0;
  ready.other = other_fd >= 0 && (fds[1].revents & kReadable) != 0;
  ready.hangup = input_ended_ && (revents & (POLLHUP | POLLERR | POLLNVAL)) != 0;
  return ready;
}

std::error_code TcpStream::pending_error() {
  const int error = sys::socket_error(fd_.get());
  if (error == 0) return {};
  return {error, std::generic_category()};
}

int TcpStream::wait_readable(int timeout_ms) {
  if (has_buffered_input()) return 1;
  return sys::poll_one(fd_.get(), POLLIN, std::chrono::milliseconds(timeout_ms));
}

Result<size_t> TcpStream::tls_recv(void* buf, size_t len) {
  TlsLayer& t = *tls_;
  // An answer the kernel could not take last time goes first (never
  // waiting): a caller that only receives still sends it.
  if (!t.pending.empty()) (void)flush_pending();
  if (t.plaintext.readable_bytes() == 0 && t.failed) return *t.failed;
  if (t.plaintext.readable_bytes() == 0 && !t.eof && !t.session.peer_closed()) {
    auto n = read_ciphertext();
    if (!n) return n.error();
    if (*n == 0) {
      t.eof = true;
      if (!t.session.peer_closed()) return Error(Errc::tls_truncated, "recv from " + where());
    } else {
      auto read = t.session.read_plaintext(t.plaintext);
      // Post-handshake messages may need an answer (a key update), or
      // carry the alert of a failure. A receive must never wait to send:
      // with the ciphertext of earlier sends still queued, a peer that
      // writes all it has before it reads would wait for us as we wait for
      // it. What the kernel does not take now stays pending, for the next
      // send or flush_pending() (a caller that polls asks for POLLOUT while
      // has_pending_output()).
      if (t.session.has_ciphertext()) t.pending += t.session.take_ciphertext();
      if (auto sent = flush_pending(); !sent && read) return sent.error();
      // Records before a bad one authenticated: theirs first, then the error.
      if (!read && t.plaintext.readable_bytes() == 0) return read.error();
      if (!read) t.failed = read.error();
    }
  }
  if (t.plaintext.readable_bytes() > 0) {
    const size_t n = std::min(len, t.plaintext.readable_bytes());
    std::memcpy(buf, t.plaintext.peek(), n);
    t.plaintext.retrieve(n);
    return n;
  }
  if (t.eof || t.session.peer_closed()) return size_t{0};
  return Error(kNothingYet, "recv from " + where() + " (no data yet)");
}

Result<size_t> TcpStream::read_ciphertext() {
  tls_->wire.resize(kReadSize);
  for (;;) {
    ssize_t n = sys::read(fd_.get(), tls_->wire.data(), tls_->wire.size());
    if (n == -EINTR) continue;
    if (n == -EWOULDBLOCK)
      return Error::from_errno(EAGAIN, "recv from " + where() + " (timed out)");
    if (n < 0) return Error::from_errno(static_cast<int>(-n), "recv from " + where());
    if (n > 0) tls_->session.feed_ciphertext(tls_->wire.data(), static_cast<size_t>(n));
    return static_cast<size_t>(n);
  }
}

Result<void> TcpStream::tls_send_all(std::string_view data) {
  tls_->session.write_plaintext(data);
  return send_ciphertext();
}

Result<void> TcpStream::send_ciphertext() {
  if (tls_->session.has_ciphertext()) tls_->pending += tls_->session.take_ciphertext();
  std::string out = std::exchange(tls_->pending, {});
  return send_raw(out.data(), out.size());
}

Result<size_t> TcpStream::send_some(std::string_view data) {
  if (tls_) {
    if (auto flushed = flush_pending(); !flushed) return flushed.error();
    if (!tls_->pending.empty()) return size_t{0};
    tls_->session.write_plaintext(data);
    if (tls_->session.has_ciphertext()) tls_->pending += tls_->session.take_ciphertext();
    if (auto flushed = flush_pending(); !flushed) return flushed.error();
    return data.size();
  }
  for (;;) {
    ssize_t n = sys::send_nonblocking(fd_.get(), data.data(), data.size());
    if (n == -EINTR) continue;
    if (n == -EAGAIN || n == -EWOULDBLOCK) return size_t{0};
    if (n < 0) return Error::from_errno(static_cast<int>(-n), "send to " + where());
    return static_cast<size_t>(n);
  }
}

bool TcpStream::has_pending_output() const {
  return tls_ && !tls_->pending.empty();
}

Result<void> TcpStream::flush_pending() {
  if (!tls_) return {};
  std::string& pending = tls_->pending;
  while (!pending.empty()) {
    ssize_t n = sys::send_nonblocking(fd_.get(), pending.data(), pending.size());
    if (n == -EINTR) continue;
    if (n == -EAGAIN || n == -EWOULDBLOCK) return {};
    if (n < 0) return Error::from_errno(static_cast<int>(-n), "send to " + where());
    pending.erase(0, static_cast<size_t>(n));
  }
  return {};
}

void TcpStream::close() {
  if (tls_ && fd_.valid() && tls_->session.handshake_done() && !tls_->session.failed()) {
    tls_->session.shutdown();  // a no-op when shutdown_write() has sent it already
    if (tls_->session.has_ciphertext()) tls_->pending += tls_->session.take_ciphertext();
    (void)flush_pending();
  }
  tls_.reset();
  fd_.reset();
}

}  // namespace tcpkit

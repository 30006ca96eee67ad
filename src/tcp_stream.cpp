#include "tcpkit/tcp_stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include "sys.h"

namespace tcpkit {

TcpStream::TcpStream(UniqueFd fd) : fd_(std::move(fd)), peer_(sys::peer_endpoint(fd_.get())) {}

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

Result<TcpStream> TcpStream::connect(std::string_view host_port, std::chrono::milliseconds timeout) {
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
std::string TcpStream::where() const { return peer_.to_string(); }

Result<void> TcpStream::send_all(const void* data, size_t len) {
  const auto* p = static_cast<const char*>(data);
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
  for (;;) {
    ssize_t n = sys::read(fd_.get(), buf, len);
    if (n == -EINTR) continue;
    if (n == -EWOULDBLOCK) return Error::from_errno(EAGAIN, "recv from " + where() + " (timed out)");
    if (n < 0) return Error::from_errno(static_cast<int>(-n), "recv from " + where());
    return static_cast<size_t>(n);
  }
}

Result<void> TcpStream::recv_exact(void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    auto n = recv(p, len);
    if (!n) return n.error();
    if (*n == 0) return Error(Errc::peer_closed, "recv from " + where());
    p += *n;
    len -= *n;
  }
  return {};
}

Result<void> TcpStream::shutdown_write() {
  if (int rc = sys::shutdown_write(fd_.get()); rc < 0) {
    return Error::from_errno(-rc, "shutdown " + where());
  }
  return {};
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

Endpoint TcpStream::local_endpoint() const { return sys::local_endpoint(fd_.get()); }

}  // namespace tcpkit

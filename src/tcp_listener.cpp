#include "tcpkit/tcp_listener.h"

#include <netinet/in.h>
#include <poll.h>

#include <cerrno>

#include "sys.h"

namespace tcpkit {

Result<TcpListener> TcpListener::bind(const Endpoint& address, const ListenOptions& options) {
  auto fd = sys::tcp_socket(address.family(), options.nonblocking, address);
  if (!fd) return fd.error();
  // SO_REUSEADDR lets a restarted server bind while connections of its
  // previous life wait out TIME_WAIT (2 x MSL, 60 s on Linux). It does not
  // let two live listeners share a port: that takes SO_REUSEPORT.
  if (options.reuse_addr) {
    if (auto r = sys::set_int_option(fd->get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR"); !r) {
      return r.error();
    }
  }
  if (options.reuse_port) {
    if (auto r = sys::set_int_option(fd->get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT"); !r) {
      return r.error();
    }
  }
  if (address.is_v6()) {
    auto r = sys::set_int_option(fd->get(), IPPROTO_IPV6, IPV6_V6ONLY, options.v6_only ? 1 : 0, "IPV6_V6ONLY");
    if (!r) return r.error();
  }
  if (auto r = sys::bind(fd->get(), address); !r) return r.error();
  if (auto r = sys::listen(fd->get(), options.backlog, address); !r) return r.error();
  TcpListener listener;
  listener.fd_ = std::move(*fd);
  listener.local_ = sys::local_endpoint(listener.fd_.get());
  return listener;
}

Result<Accepted> TcpListener::accept(std::chrono::milliseconds timeout) {
  const std::string what = "accept on " + local_.to_string();
  for (;;) {
    if (timeout.count() >= 0) {
      int ready = sys::poll_one(fd_.get(), POLLIN, timeout);
      if (ready == 0) return Error::from_errno(ETIMEDOUT, what);
      if (ready < 0) return Error::from_errno(-ready, what);
    }
    Endpoint peer;
    int fd = sys::accept(fd_.get(), &peer, /*nonblocking=*/false);
    // The client may have reset between poll and accept; wait for the next one.
    if (fd == -EINTR || fd == -ECONNABORTED) continue;
    if (fd == -EAGAIN && timeout.count() >= 0) continue;
    if (fd < 0) return Error::from_errno(-fd, what);
    return Accepted{TcpStream(UniqueFd(fd)), peer};
  }
}

}  // namespace tcpkit

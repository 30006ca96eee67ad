#include "tcpkit/tcp_listener.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>

#include <cerrno>

#include "sys.h"
#include "unix_socket_file.h"

namespace tcpkit {

Result<bool> TcpListener::remove_stale_socket(const Endpoint& address) {
  return clear_stale_socket_file(address);
}

Result<TcpListener> TcpListener::bind(const Endpoint& address, const ListenOptions& options) {
  if (address.is_unix()) return bind_unix(address, options);
  auto fd = sys::tcp_socket(address.family(), options.nonblocking, address);
  if (!fd) return fd.error();
  // The options that are on or off. SO_REUSEADDR lets a restarted server
  // bind while connections of its previous life wait out TIME_WAIT (2 x MSL,
  // 60 s on Linux). It does not let two live listeners share a port: that
  // takes SO_REUSEPORT. TCP_NODELAY and SO_KEEPALIVE go to every accepted
  // socket from here.
  const struct {
    bool on;
    int level;
    int name;
    const char* what;
  } flags[] = {
      {options.reuse_addr, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"},
      {options.reuse_port, SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT"},
      {options.tcp_nodelay, IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"},
      {options.keepalive, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"},
  };
  for (const auto& flag : flags) {
    if (!flag.on) continue;
    if (auto r = sys::set_int_option(fd->get(), flag.level, flag.name, 1, flag.what); !r) {
      return r.error();
    }
  }
  if (address.is_v6()) {
    auto r = sys::set_int_option(fd->get(), IPPROTO_IPV6, IPV6_V6ONLY, options.v6_only ? 1 : 0,
                                 "IPV6_V6ONLY");
    if (!r) return r.error();
  }
  if (auto r = sys::bind(fd->get(), address); !r) return r.error();
  if (auto r = sys::listen(fd->get(), options.backlog, address); !r) return r.error();
  TcpListener listener;
  listener.fd_ = std::move(*fd);
  listener.local_ = sys::local_endpoint(listener.fd_.get());
  return listener;
}

// No socket options here: SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY are
// about ports, TCP_NODELAY and SO_KEEPALIVE about TCP. The file takes their
// place: a stale one is cleared first, permissions are set between bind()
// and listen() (connects are refused until listen, so no client meets the
// umask's permissions), and the file goes with the listener.
Result<TcpListener> TcpListener::bind_unix(const Endpoint& address, const ListenOptions& options) {
  if (auto cleared = clear_stale_socket_file(address); !cleared) return cleared.error();
  auto fd = sys::tcp_socket(AF_UNIX, options.nonblocking, address);
  if (!fd) return fd.error();
  if (auto r = sys::bind(fd->get(), address); !r) return r.error();
  TcpListener listener;
  if (!address.is_abstract()) {
    const std::string path = address.unix_path();
    auto file = UnixSocketFile::adopt(path);
    if (!file) return file.error();
    listener.socket_file_ = std::make_shared<UnixSocketFile>(std::move(*file));
    if (options.unix_mode != 0) {
      if (auto r = sys::chmod(path.c_str(), options.unix_mode); !r) return r.error();
    }
  }
  if (auto r = sys::listen(fd->get(), options.backlog, address); !r) return r.error();
  listener.fd_ = std::move(*fd);
  // The address as given, not the kernel's copy: every connection accepted
  // here shares its path block.
  listener.local_ = address;
  return listener;
}

UniqueFd TcpListener::release_fd() {
  if (socket_file_) socket_file_->keep();
  socket_file_.reset();
  return std::move(fd_);
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
    int fd = sys::accept(fd_.get(), &peer, /*nonblocking=*/false, local_);
    // The client may have reset between poll and accept; wait for the next one.
    if (fd == -EINTR || fd == -ECONNABORTED) continue;
    if (fd == -EAGAIN && timeout.count() >= 0) continue;
    if (fd < 0) return Error::from_errno(-fd, what);
    return Accepted{TcpStream(UniqueFd(fd), peer), peer};
  }
}

}  // namespace tcpkit

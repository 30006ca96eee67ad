/// \file
/// TcpListener: a listening TCP or Unix-domain socket used with blocking
/// accept().
///
/// The tutorial's server flow: bind() (socket + SO_REUSEADDR + bind + listen)
/// then accept() each client. SO_REUSEADDR is on by default so a restarted
/// server can bind at once while old connections sit in TIME_WAIT (the
/// tutorial's "Address already in use"). A Unix socket's file is the same
/// lesson in another form: a stale file left by a dead server is replaced, a
/// live server's path is refused, and the listener removes its own file when
/// it is destroyed. Owns its descriptor (and socket file); move-only;
/// accept() may be called from one thread at a time.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <memory>

#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_stream.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class UnixSocketFile;

struct ListenOptions {
  bool reuse_addr = true;    ///< bind again at once after a restart
  bool reuse_port = false;   ///< several sockets share the port (SO_REUSEPORT)
  bool v6_only = true;       ///< "::" serves IPv6 only; bind 0.0.0.0 too for IPv4
  bool nonblocking = false;  ///< for use on an event loop
  int backlog = SOMAXCONN;
  /// Permissions of a Unix socket's file (e.g. 0660: who may connect); 0
  /// leaves what the umask gives. Set before listen(), so no client can slip
  /// in under looser permissions.
  unsigned unix_mode = 0;
  /// TCP_NODELAY and SO_KEEPALIVE on the listening socket, which every
  /// connection accepted from it inherits (Linux copies a listener's socket
  /// options to the sockets it accepts): set once here, not with two system
  /// calls per connection. Ignored for a Unix socket, where they mean nothing.
  bool tcp_nodelay = false;
  bool keepalive = false;
};

struct Accepted {
  TcpStream stream;
  Endpoint peer;
};

class TcpListener {
 public:
  static constexpr std::chrono::milliseconds kNoTimeout{-1};

  TcpListener() = default;
  static Result<TcpListener> bind(const Endpoint& address, const ListenOptions& options = {});
  /// What bind() does first for a Unix path, for a caller that wants to say
  /// so: true when a stale socket file (nobody listening) was removed, false
  /// when the path was free (or `address` is not a Unix path). EADDRINUSE
  /// naming the live server's pid, or EEXIST for a path that is not a socket.
  static Result<bool> remove_stale_socket(const Endpoint& address);

  /// Waits for the next client; with a timeout, std::errc::timed_out when none comes.
  Result<Accepted> accept(std::chrono::milliseconds timeout = kNoTimeout);

  /// The bound address, with the real port after binding port 0.
  Endpoint local_endpoint() const { return local_; }
  int fd() const { return fd_.get(); }
  /// Hands the socket over; a Unix socket's file then stays in place.
  UniqueFd release_fd();

 private:
  static Result<TcpListener> bind_unix(const Endpoint& address, const ListenOptions& options);

  UniqueFd fd_;
  Endpoint local_;
  std::shared_ptr<UnixSocketFile> socket_file_;  ///< removed with the listener
};

}  // namespace tcpkit

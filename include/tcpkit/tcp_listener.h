/// \file
/// TcpListener: a listening TCP socket used with blocking accept().
///
/// The tutorial's server flow: bind() (socket + SO_REUSEADDR + bind + listen)
/// then accept() each client. SO_REUSEADDR is on by default so a restarted
/// server can bind at once while old connections sit in TIME_WAIT (the
/// tutorial's "Address already in use"). Owns its descriptor; move-only;
/// accept() may be called from one thread at a time.
#pragma once

#include <sys/socket.h>

#include <chrono>

#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_stream.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

struct ListenOptions {
  bool reuse_addr = true;   ///< bind again at once after a restart
  bool reuse_port = false;  ///< several sockets share the port (SO_REUSEPORT)
  bool v6_only = true;      ///< "::" serves IPv6 only; bind 0.0.0.0 too for IPv4
  bool nonblocking = false; ///< for use on an event loop
  int backlog = SOMAXCONN;
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

  /// Waits for the next client; with a timeout, std::errc::timed_out when none comes.
  Result<Accepted> accept(std::chrono::milliseconds timeout = kNoTimeout);

  /// The bound address, with the real port after binding port 0.
  Endpoint local_endpoint() const { return local_; }
  int fd() const { return fd_.get(); }
  UniqueFd release_fd() { return std::move(fd_); }

 private:
  UniqueFd fd_;
  Endpoint local_;
};

}  // namespace tcpkit

/// \file
/// coro::connect(): the tutorial's `s.connect((host, port))` as an await.
///
/// Connects on the current thread's loop (the awaiting task's), with the
/// ClientOptions of a TcpClient: connect_timeout bounds the TCP connect,
/// `tls` puts TLS inside the connection (the await then completes after the
/// handshake), and the connection options (high-water mark...) apply to the
/// stream. Retrying is the caller's loop, not an option here.
#pragma once

#include <coroutine>
#include <memory>

#include "tcpkit/coro_stream.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_client.h"

namespace tcpkit::coro {

namespace detail {
struct ConnectState;
}

/// Completes with a Stream once the connection is ready for traffic (after
/// its TLS handshake, if any), or with the Error that stopped it: refused,
/// unreachable, std::errc::timed_out after connect_timeout, a failed
/// handshake. Destroying the awaiting task stops the attempt and closes
/// what was made.
class ConnectAwaiter {
 public:
  ConnectAwaiter(const Endpoint& target, ClientOptions options);
  ConnectAwaiter(ConnectAwaiter&&) noexcept = default;
  ~ConnectAwaiter();
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h);
  Result<Stream> await_resume();

 private:
  std::shared_ptr<detail::ConnectState> state_;
};

/// Loop thread of the awaiting task. `options.retry` is ignored.
ConnectAwaiter connect(const Endpoint& target, const ClientOptions& options);
/// With the default ClientOptions (a separate overload, not a default
/// argument: GCC 12 mishandles a default argument's temporary inside a
/// co_await expression).
ConnectAwaiter connect(const Endpoint& target);

}  // namespace tcpkit::coro

/// \file
/// The callback types of a connection, shared by TcpServer, TcpClient and
/// TcpConnection; TLS reports through the same table (on_handshake).
/// Callbacks that belong to one class only are declared with that class:
/// TcpServer's set_on_refused, set_accept_filter and stop()'s on_stopped,
/// TcpClient's set_on_connect_error, EventLoop's Functor. The coroutine API
/// (coro.h) awaits instead; its one callback is serve()'s handler coroutine.
///
/// Callbacks run in the loop thread that owns the connection. They receive
/// the connection as a shared pointer, which they may keep (e.g. in a chat
/// room's member list) and use from any thread through its thread-safe calls.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

namespace tcpkit {

class Buffer;
class TcpConnection;
using TcpConnectionPtr = std::shared_ptr<TcpConnection>;

/// A connection came up or went down (conn->connected() tells which; when
/// down, conn->close_reason() says why).
using ConnectionCallback = std::function<void(const TcpConnectionPtr&)>;
/// Bytes arrived. Consume what forms whole messages and leave the rest in
/// the buffer: it is kept for the next call.
using MessageCallback = std::function<void(const TcpConnectionPtr&, Buffer&)>;
/// A connection that echoes (TcpConnection::start_echo()) sent back `bytes`
/// more of what it received; `in_kernel`: they moved from socket to socket
/// inside the kernel, never copied to this process.
using EchoCallback = std::function<void(const TcpConnectionPtr&, size_t bytes, bool in_kernel)>;
/// The output buffer drained to empty; the sends that drain before the
/// call runs share one call, and it is not made while output sent after
/// the drain still waits (its own drain makes it): when it runs, the
/// output is empty.
using WriteCompleteCallback = std::function<void(const TcpConnectionPtr&)>;
/// The output buffer grew past the high-water mark; `queued` is its size.
using HighWaterMarkCallback = std::function<void(const TcpConnectionPtr&, size_t queued)>;
/// The peer sent FIN (recv() returned 0). Its data has all been delivered; we
/// may still send. Without this callback the connection shuts down its side
/// once the output drains, and closes.
using PeerClosedCallback = std::function<void(const TcpConnectionPtr&)>;

/// Every callback of one connection. TcpServer and TcpClient build one table
/// and share it, immutable, among all their connections (one pointer each
/// instead of seven std::function copies); a connection whose callbacks change
/// (TcpConnection::set_on_message, say) gets a copy of its
/// own first, so the change reaches that connection only.
struct ConnectionCallbacks {
  ConnectionCallback on_connection;
  MessageCallback on_message;
  WriteCompleteCallback on_write_complete;
  HighWaterMarkCallback on_high_water_mark;
  PeerClosedCallback on_peer_closed;
  /// The connection is ready for the user's traffic end to end: after the
  /// TLS handshake (conn->tls() says with what), or, for a connection with
  /// no layer when on_connection returns, right after on_connection. A
  /// layer started later (after a PROXY header) reports its handshake too.
  ConnectionCallback on_handshake;
  /// The owner's hook (TcpServer/TcpClient): once, after on_connection reported the close.
  ConnectionCallback on_close;
};

}  // namespace tcpkit

// The connection callbacks behind coro::Stream.
//
// Internal. An Acceptor or connect() installs them once on the table its
// TcpServer or TcpClient shares among all connections (no per-connection
// copy); each finds the stream's state in the connection's context slot.
// All run in the connection's loop thread.
#pragma once

#include <memory>

#include "tcpkit/coro_stream.h"

namespace tcpkit::coro::detail {

void on_stream_message(const TcpConnectionPtr& conn, Buffer& in);
void on_stream_peer_closed(const TcpConnectionPtr& conn);
void on_stream_write_complete(const TcpConnectionPtr& conn);
/// For on_connection when conn->disconnected(): wakes the waiting tasks
/// from the loop's queue, never from inside the close (which may be a
/// server's destructor).
void on_stream_down(const TcpConnectionPtr& conn);

/// Sets the three data callbacks on a TcpServer, TcpClient or TcpConnection.
template <typename Owner>
void install_stream_callbacks(Owner& owner) {
  owner.set_on_message(&on_stream_message);
  owner.set_on_peer_closed(&on_stream_peer_closed);
  owner.set_on_write_complete(&on_stream_write_complete);
}

/// Loop thread of `conn`: puts a fresh state in its context slot, so that
/// from the next event on its bytes are kept for a Stream. The callbacks
/// must be installed already (or before the next event).
void attach_stream_state(const TcpConnectionPtr& conn);
/// The stream that owns `conn`, whose state is attached; any thread, once
/// attach_stream_state() has happened before (a queued hand-over).
Stream make_stream(const TcpConnectionPtr& conn, std::shared_ptr<void> keep);

}  // namespace tcpkit::coro::detail

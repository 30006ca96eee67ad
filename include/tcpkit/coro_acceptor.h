/// \file
/// coro::Acceptor: a TcpServer's new connections as an awaitable accept(),
/// the tutorial's `conn, addr = s.accept()`.
///
/// The user owns the Acceptor next to its TcpServer, on the server's base
/// loop, and creates it before server.start(): it takes over the server's
/// callbacks. accept() and the destructor belong to the base loop's thread.
/// Each accepted connection arrives as a Stream that belongs to the
/// connection's own loop (the base loop, or an I/O loop with
/// ServerOptions::threads): serve it with a task spawned there,
/// `spawn(stream.loop(), serve(std::move(stream)))`.
///
/// Connections that arrive while no task accepts wait in a queue (bounded by
/// the server's max_connections); their bytes are kept by their Stream.
/// close() or the destructor ends accepting (call close() with the server's
/// stop()): a task waiting in accept() resumes with an Error
/// (operation_canceled).
#pragma once

#include <coroutine>
#include <functional>
#include <memory>

#include "tcpkit/coro_stream.h"
#include "tcpkit/coro_task.h"
#include "tcpkit/result.h"

namespace tcpkit {
class TcpServer;
}

namespace tcpkit::coro {

namespace detail {
struct AcceptQueue;
}

class Acceptor {
 public:
  /// Base loop thread, before server.start(). `server` must outlive the
  /// Acceptor's tasks' use of it; the Acceptor itself may go first. The
  /// server may go first too: the connections it had queued here from its
  /// I/O loops go with those loops (queued() no longer counts them, and no
  /// accept() hands them out).
  explicit Acceptor(TcpServer& server);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  /// Completes with the next connection, or with an Error once accepting
  /// has ended. Holds the queue alive, so a task waiting here outlives the
  /// Acceptor safely; destroying the task unhooks it.
  class AcceptAwaiter {
   public:
    explicit AcceptAwaiter(std::shared_ptr<detail::AcceptQueue> queue) : queue_(std::move(queue)) {}
    AcceptAwaiter(AcceptAwaiter&&) noexcept = default;
    ~AcceptAwaiter();
    bool await_ready() const;
    void await_suspend(std::coroutine_handle<> h);
    Result<Stream> await_resume();

   private:
    std::shared_ptr<detail::AcceptQueue> queue_;
    std::coroutine_handle<> waiting_;
  };
  /// Base loop thread, one task at a time: a second task accepting while
  /// the first waits is misuse, and aborts with a message in every build.
  AcceptAwaiter accept();
  /// Base loop thread. Ends accepting: waiting and later accepts get an
  /// Error, queued connections are closed, and new ones are closed at once
  /// (stop the server too, to stop them arriving).
  void close();
  /// Connections accepted by the server and not yet by a task.
  size_t queued() const;

 private:
  std::shared_ptr<detail::AcceptQueue> queue_;
};

/// The accept loop of every server: each connection goes to a task
/// `handler(stream)` spawned on the connection's loop; ends when accepting
/// does. Spawn it on the Acceptor's loop: `spawn(&loop, serve(acceptor, echo))`.
Task<> serve(Acceptor& acceptor, std::function<Task<>(Stream)> handler);

}  // namespace tcpkit::coro

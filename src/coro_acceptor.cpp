#include "tcpkit/coro_acceptor.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <utility>

#include "coro_stream_hooks.h"
#include "fatal.h"
#include "tcpkit/tcp_server.h"

namespace tcpkit::coro {
namespace detail {

namespace {

// Set while a loop lives; cleared as it is destroyed (its extensions go
// first). A server's I/O loops die with the server, which may go before its
// Acceptor: the connections queued from them must then not reach into them.
using LoopAlive = std::shared_ptr<std::atomic<bool>>;

struct LoopAliveExtension : EventLoop::Extension {
  LoopAlive alive = std::make_shared<std::atomic<bool>>(true);
  ~LoopAliveExtension() override { alive->store(false, std::memory_order_release); }
};
const char kLoopAliveKey = 0;

// Loop thread of `loop`.
LoopAlive loop_alive(EventLoop* loop) {
  if (auto* ext = loop->extension(&kLoopAliveKey)) {
    return static_cast<LoopAliveExtension&>(*ext).alive;
  }
  auto& ext = loop->add_extension(&kLoopAliveKey, std::make_unique<LoopAliveExtension>());
  return static_cast<LoopAliveExtension&>(ext).alive;
}

}  // namespace

// The accepted connections no task has taken yet, in the base loop. Each
// becomes a Stream when a task takes it.
struct AcceptQueue {
  struct Entry {
    TcpConnectionPtr conn;
    LoopAlive loop_alive;  ///< of the connection's loop
  };
  EventLoop* loop;
  std::deque<Entry> ready;
  std::coroutine_handle<> waiter;
  bool closed = false;

  void wake() {
    if (waiter) std::exchange(waiter, {}).resume();
  }
  // Drops the connections whose loop is gone with their server: they were
  // closed as it went, and nothing may touch their loop any more (not even
  // a Stream's goodbye).
  void prune() {
    std::erase_if(ready,
                  [](const Entry& e) { return !e.loop_alive->load(std::memory_order_acquire); });
  }
};

namespace {

// In the connection's loop: the stream is made there, before any byte can
// arrive without it, and handed to the base loop's queue.
// The functor holds the connection, not a Stream: a loop destroyed with it
// still queued drops it without a Stream's goodbye into a dying loop.
void hand_over(const std::weak_ptr<AcceptQueue>& weak, const TcpConnectionPtr& conn) {
  attach_stream_state(conn);
  auto queue = weak.lock();
  if (!queue) {
    conn->force_close();
    return;
  }
  queue->loop->queue_in_loop([weak, conn, alive = loop_alive(conn->loop())]() mutable {
    auto q = weak.lock();
    if (!q || q->closed) {
      if (alive->load(std::memory_order_acquire)) conn->force_close();
      return;
    }
    q->ready.push_back({conn, std::move(alive)});
    q->wake();
  });
}

}  // namespace
}  // namespace detail

Acceptor::Acceptor(TcpServer& server) : queue_(std::make_shared<detail::AcceptQueue>()) {
  queue_->loop = server.base_loop();
  queue_->loop->assert_in_loop_thread();
  detail::install_stream_callbacks(server);
  std::weak_ptr<detail::AcceptQueue> weak = queue_;
  server.set_on_connection([weak](const TcpConnectionPtr& conn) {
    if (conn->connected()) {
      detail::hand_over(weak, conn);
    } else {
      detail::on_stream_down(conn);
    }
  });
}

Acceptor::~Acceptor() {
  close();
}

void Acceptor::close() {
  queue_->loop->assert_in_loop_thread();
  if (queue_->closed) return;
  queue_->closed = true;
  queue_->prune();
  // Not Stream::close(), which belongs to the connection's loop: with I/O
  // threads the queued connections live on theirs, and this is the base
  // loop. Each goes as a Stream would, with its goodbye on its own loop.
  for (auto& entry : queue_->ready) {
    entry.conn->force_close();
    (void)detail::make_stream(entry.conn, {});
  }
  queue_->ready.clear();
  // Not from here, which may be a destructor: from the loop's queue.
  queue_->loop->queue_in_loop([queue = queue_] { queue->wake(); });
}

size_t Acceptor::queued() const {
  queue_->prune();
  return queue_->ready.size();
}

Acceptor::AcceptAwaiter Acceptor::accept() {
  queue_->loop->assert_in_loop_thread();
  return AcceptAwaiter(queue_);
}

Acceptor::AcceptAwaiter::~AcceptAwaiter() {
  if (waiting_ && queue_->waiter == waiting_) queue_->waiter = {};
}

bool Acceptor::AcceptAwaiter::await_ready() const {
  queue_->prune();
  return queue_->closed || !queue_->ready.empty();
}

void Acceptor::AcceptAwaiter::await_suspend(std::coroutine_handle<> h) {
  // The second would replace the first, which would then wait for ever.
  if (queue_->waiter) tcpkit::detail::fatal("two tasks accepting from one coro::Acceptor at once");
  queue_->waiter = h;
  waiting_ = h;
}

Result<Stream> Acceptor::AcceptAwaiter::await_resume() {
  waiting_ = {};
  queue_->prune();
  if (queue_->ready.empty()) {
    return Error(std::make_error_code(std::errc::operation_canceled),
                 "accept: the acceptor is closed");
  }
  Stream stream = detail::make_stream(queue_->ready.front().conn, {});
  queue_->ready.pop_front();
  return stream;
}

Task<> serve(Acceptor& acceptor, std::function<Task<>(Stream)> handler) {
  for (;;) {
    auto client = co_await acceptor.accept();
    if (!client) co_return;
    EventLoop* loop = client->loop();
    spawn(loop, handler(std::move(*client)));
  }
}

}  // namespace tcpkit::coro

#include "tcpkit/coro_connect.h"

#include <optional>
#include <utility>

#include "coro_stream_hooks.h"

namespace tcpkit::coro {
namespace detail {

// The attempt behind one ConnectAwaiter, in the awaiting task's loop. The
// client's callbacks hold it weakly: once the awaiter is gone they only
// keep the stream's state up to date.
struct ConnectState {
  Endpoint target;
  ClientOptions options;
  EventLoop* loop = nullptr;
  std::shared_ptr<TcpClient> client;
  std::coroutine_handle<> waiter;
  std::optional<Result<Stream>> result;

  // From the loop's queue, never from inside the client's own callback:
  // the awaiting task may destroy the client as it resumes.
  void finish(Result<Stream> r, const std::weak_ptr<ConnectState>& weak) {
    if (result) return;
    result.emplace(std::move(r));
    loop->queue_in_loop([weak] {
      auto self = weak.lock();
      if (self && self->waiter) std::exchange(self->waiter, {}).resume();
    });
  }
};

}  // namespace detail

ConnectAwaiter::ConnectAwaiter(const Endpoint& target, ClientOptions options)
    : state_(std::make_shared<detail::ConnectState>()) {
  state_->target = target;
  state_->options = std::move(options);
  state_->options.retry = false;
}

ConnectAwaiter::~ConnectAwaiter() {
  // A TcpClient stops (and closes what it made) as it goes; a stream that
  // was handed out owns its own reference.
  if (state_) state_->client.reset();
}

void ConnectAwaiter::await_suspend(std::coroutine_handle<> h) {
  auto& st = *state_;
  st.loop = EventLoop::current();
  assert(st.loop != nullptr && "connect() outside a loop thread");
  st.waiter = h;
  st.client = std::make_shared<TcpClient>(st.loop, st.target, st.options);
  TcpClient& client = *st.client;
  detail::install_stream_callbacks(client);
  std::weak_ptr<detail::ConnectState> weak = state_;
  client.set_on_connection([weak](const TcpConnectionPtr& conn) {
    if (conn->connected()) {
      detail::attach_stream_state(conn);
      return;
    }
    detail::on_stream_down(conn);
    if (auto self = weak.lock()) {
      auto why = conn->close_reason();
      self->finish(Error(why, "connect to " + self->target.to_string()), weak);
    }
  });
  client.set_on_handshake([weak](const TcpConnectionPtr& conn) {
    auto self = weak.lock();
    if (!self || self->result) return;
    self->finish(detail::make_stream(conn, self->client), weak);
  });
  client.set_on_connect_error([weak](const Error& error, std::chrono::milliseconds) {
    if (auto self = weak.lock()) self->finish(error, weak);
  });
  client.connect();
}

ConnectAwaiter connect(const Endpoint& target, const ClientOptions& options) {
  return ConnectAwaiter(target, options);
}
ConnectAwaiter connect(const Endpoint& target) {
  return ConnectAwaiter(target, ClientOptions{});
}

Result<Stream> ConnectAwaiter::await_resume() {
  assert(state_->result && "connect resumed without a result");
  return std::move(*state_->result);
}

}  // namespace tcpkit::coro

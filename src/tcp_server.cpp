#include "tcpkit/tcp_server.h"

#include <cassert>

#include "acceptor.h"
#include "callback_table.h"
#include "connection_owner.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/loop_thread_pool.h"

namespace tcpkit {

struct TcpServer::LoopState {
  EventLoop* loop;
  std::unordered_map<uint64_t, TcpConnectionPtr> connections;
  std::vector<std::unique_ptr<Acceptor>> acceptors;  // reuse-port-per-loop mode only
};

namespace {

// How the server's listening sockets are bound. The TCP options every
// connection gets go on the listener, from which accepted sockets inherit
// them: no setsockopt() per connection.
ListenOptions listen_options(const ServerOptions& options) {
  ListenOptions lo;
  lo.nonblocking = true;
  lo.reuse_port = options.reuse_port || options.reuse_port_per_loop;
  lo.unix_mode = options.unix_mode;
  lo.tcp_nodelay = options.tcp_nodelay;
  lo.keepalive = options.keepalive;
  lo.v6_only = options.v6_only;
  return lo;
}

// Binds one more SO_REUSEPORT listener on each of `endpoints` (ports known).
Result<std::vector<TcpListener>> bind_reuse_port_listeners(const std::vector<Endpoint>& endpoints,
                                                           const ServerOptions& options) {
  ListenOptions lo = listen_options(options);
  lo.reuse_port = true;
  std::vector<TcpListener> listeners;
  for (const auto& endpoint : endpoints) {
    // A Unix path has one listener; the first loop accepts for all.
    if (endpoint.is_unix()) continue;
    auto listener = TcpListener::bind(endpoint, lo);
    if (!listener) return listener.error();
    listeners.push_back(std::move(*listener));
  }
  return listeners;
}

}  // namespace

TcpServer::TcpServer(EventLoop* loop, ServerOptions options)
    : loop_(loop),
      options_(std::move(options)),
      pool_(std::make_unique<LoopThreadPool>(loop, options_.threads)),
      connection_options_(std::make_shared<const ConnectionOptions>(options_.connection)) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_close,
                             [this](const TcpConnectionPtr& c) { remove_connection(c); });
}

TcpServer::~TcpServer() {
  loop_->assert_in_loop_thread();
  if (drain_timer_ != 0) loop_->cancel(drain_timer_);
  base_acceptors_.clear();
  // Tear every connection down in its own loop before the loops go away.
  for (auto& state : loop_states_) {
    state->loop->run_in_loop_and_wait([&state] {
      state->acceptors.clear();
      auto connections = std::move(state->connections);
      // connect_destroyed() reports the close to the user but never runs
      // the on_close hook, which would reach back into this server.
      for (auto& [id, conn] : connections) ConnectionOwner::destroyed(*conn);
    });
  }
  pool_.reset();
}

void TcpServer::set_on_connection(ConnectionCallback cb) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_connection, std::move(cb));
}
void TcpServer::set_on_message(MessageCallback cb) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_message, std::move(cb));
}
void TcpServer::set_on_write_complete(WriteCompleteCallback cb) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_write_complete, std::move(cb));
}
void TcpServer::set_on_high_water_mark(HighWaterMarkCallback cb) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_high_water_mark, std::move(cb));
}
void TcpServer::set_on_handshake(ConnectionCallback cb) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_handshake, std::move(cb));
}
void TcpServer::set_on_peer_closed(PeerClosedCallback cb) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_peer_closed, std::move(cb));
}

Result<void> TcpServer::listen(const Endpoint& address) {
  loop_->assert_in_loop_thread();
  assert(!started_);
  auto listener = TcpListener::bind(address, listen_options(options_));
  if (!listener) return listener.error();
  endpoints_.push_back(listener->local_endpoint());
  pending_listeners_.push_back(std::move(*listener));
  return {};
}

Result<void> TcpServer::start() {
  loop_->assert_in_loop_thread();
  if (started_) return {};
  if (auto r = pool_->start(); !r) return r;
  started_ = true;
  for (auto* io_loop : pool_->loops()) {
    loop_states_.push_back(std::make_unique<LoopState>(LoopState{io_loop, {}, {}}));
    if (options_.busy_poll.count() > 0)
      io_loop->run_in_loop([io_loop, spin = options_.busy_poll] { io_loop->set_busy_poll(spin); });
  }
  if (!options_.reuse_port_per_loop) {
    for (auto& listener : pending_listeners_) {
      auto acceptor = std::make_unique<Acceptor>(loop_, std::move(listener));
      acceptor->set_on_new_connection(
          [this](UniqueFd fd, const Endpoint& peer, const Endpoint& local) {
            new_connection(state_of(pool_->next_loop()), std::move(fd), peer, local);
          });
      acceptor->set_on_exhausted(
          [this] { refused_exhausted_.fetch_add(1, std::memory_order_relaxed); });
      acceptor->listen();
      base_acceptors_.push_back(std::move(acceptor));
    }
    pending_listeners_.clear();
    return {};
  }
  // One listener per loop and address: the first loop takes the sockets bound
  // in listen(); the others bind the same (now known) ports with SO_REUSEPORT.
  // Every socket is bound before any loop accepts, so a failed bind leaves
  // no loop half served.
  std::vector<std::vector<TcpListener>> per_loop;
  per_loop.push_back(std::move(pending_listeners_));
  pending_listeners_.clear();
  for (size_t i = 1; i < loop_states_.size(); ++i) {
    auto listeners = bind_reuse_port_listeners(endpoints_, options_);
    if (!listeners) return listeners.error();
    per_loop.push_back(std::move(*listeners));
  }
  for (size_t i = 0; i < loop_states_.size(); ++i) {
    LoopState* state = loop_states_[i].get();
    state->loop->run_in_loop_and_wait([this, state, &listeners = per_loop[i]] {
      for (auto& listener : listeners) {
        auto acceptor = std::make_unique<Acceptor>(state->loop, std::move(listener));
        acceptor->set_on_new_connection(
            [this, state](UniqueFd fd, const Endpoint& peer, const Endpoint& local) {
              new_connection(state, std::move(fd), peer, local);
            });
        acceptor->set_on_exhausted(
            [this] { refused_exhausted_.fetch_add(1, std::memory_order_relaxed); });
        acceptor->listen();
        state->acceptors.push_back(std::move(acceptor));
      }
    });
  }
  return {};
}

TcpServer::LoopState* TcpServer::state_of(EventLoop* loop) {
  for (auto& state : loop_states_) {
    if (state->loop == loop) return state.get();
  }
  assert(false && "loop not served by this server");
  return nullptr;
}

// Runs in the accepting loop: the base loop, or the I/O loop itself.
void TcpServer::new_connection(LoopState* state, UniqueFd fd, const Endpoint& peer,
                               const Endpoint& local) {
  accepted_.fetch_add(1, std::memory_order_relaxed);
  if (stopping_.load(std::memory_order_acquire)) return;  // fd closes here
  if (accept_filter_ && !accept_filter_(peer)) {
    refused_by_filter_.fetch_add(1, std::memory_order_relaxed);
    if (on_refused_) on_refused_(peer, make_error_code(Errc::not_allowed));
    return;  // closed before a byte is read or written
  }
  if (options_.max_connections > 0 &&
      open_.load(std::memory_order_relaxed) >= options_.max_connections) {
    refused_over_limit_.fetch_add(1, std::memory_order_relaxed);
    if (on_refused_) on_refused_(peer, make_error_code(Errc::too_many_connections));
    return;  // accepted and closed at once: the client sees EOF, not a hang
  }
  open_.fetch_add(1, std::memory_order_relaxed);
  // TCP_NODELAY and SO_KEEPALIVE came with the socket, from its listener.
  uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  auto conn = std::make_shared<TcpConnection>(state->loop, id, std::move(fd), local, peer,
                                              connection_options_);
  ConnectionOwner::set_callbacks(*conn, callbacks_);
  state->loop->run_in_loop([state, conn, tls = options_.tls.get()] {
    state->connections.emplace(conn->id(), conn);
    ConnectionOwner::established(*conn, tls);
  });
}

// The on_close hook, in the connection's loop.
void TcpServer::remove_connection(const TcpConnectionPtr& conn) {
  state_of(conn->loop())->connections.erase(conn->id());
  open_.fetch_sub(1, std::memory_order_relaxed);
  // Destroy after the current event: the channel may still be iterating.
  conn->loop()->queue_in_loop([conn] { ConnectionOwner::destroyed(*conn); });
  if (stopping_.load(std::memory_order_acquire)) queue_check_stopped();
}

void TcpServer::stop(std::chrono::milliseconds drain_deadline, std::function<void()> on_stopped) {
  loop_->assert_in_loop_thread();
  if (stopping_.exchange(true)) return;
  on_stopped_ = std::move(on_stopped);
  base_acceptors_.clear();
  for (auto& state : loop_states_) {
    LoopState* s = state.get();
    s->loop->run_in_loop([s, draining = on_draining_] {
      s->acceptors.clear();
      for (auto& [id, conn] : s->connections) {
        if (draining) draining(conn);
        conn->shutdown();
      }
    });
  }
  drain_timer_ = loop_->run_after(drain_deadline, [this] {
    drain_timer_ = 0;
    for (auto& state : loop_states_) {
      LoopState* s = state.get();
      s->loop->run_in_loop([s] {
        for (auto& [id, conn] : s->connections)
          conn->force_close(make_error_code(std::errc::timed_out));
      });
    }
  });
  queue_check_stopped();
}

// The check runs later in the base loop, where the server may have been
// destroyed meanwhile (stop() and then destruction in one turn, or from
// on_stopped while other checks are queued): the token tells.
void TcpServer::queue_check_stopped() {
  loop_->queue_in_loop([this, alive = std::weak_ptr<int>(alive_)] {
    if (!alive.expired()) check_stopped();
  });
}

void TcpServer::check_stopped() {
  loop_->assert_in_loop_thread();
  if (open_.load(std::memory_order_relaxed) != 0 || !on_stopped_) return;
  auto done = std::move(on_stopped_);
  on_stopped_ = nullptr;
  done();
}

ServerStats TcpServer::stats() const {
  ServerStats s;
  s.accepted = accepted_.load(std::memory_order_relaxed);
  s.open = open_.load(std::memory_order_relaxed);
  s.refused_over_limit = refused_over_limit_.load(std::memory_order_relaxed);
  s.refused_exhausted = refused_exhausted_.load(std::memory_order_relaxed);
  s.refused_by_filter = refused_by_filter_.load(std::memory_order_relaxed);
  return s;
}

std::vector<EventLoop*> TcpServer::io_loops() const {
  std::vector<EventLoop*> loops;
  for (auto& state : loop_states_) loops.push_back(state->loop);
  return loops;
}

}  // namespace tcpkit

#include "tcpkit/tcp_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cassert>
#include <future>

#include "acceptor.h"
#include "callback_table.h"
#include "sys.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/loop_thread_pool.h"

namespace tcpkit {

struct TcpServer::LoopState {
  EventLoop* loop;
  std::unordered_map<uint64_t, TcpConnectionPtr> connections;
  std::vector<std::unique_ptr<Acceptor>> acceptors;  // reuse-port-per-loop mode only
};

namespace {

// Runs `f` in `loop`'s thread and waits for it; inline when already there.
void run_and_wait(EventLoop* loop, const std::function<void()>& f) {
  if (loop->is_in_loop_thread()) {
    f();
    return;
  }
  std::promise<void> done;
  loop->run_in_loop([&] {
    f();
    done.set_value();
  });
  done.get_future().wait();
}

}  // namespace

TcpServer::TcpServer(EventLoop* loop, ServerOptions options)
    : loop_(loop), options_(std::move(options)), pool_(std::make_unique<LoopThreadPool>(loop, options_.threads)) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_close,
                             [this](const TcpConnectionPtr& c) { remove_connection(c); });
}

TcpServer::~TcpServer() {
  loop_->assert_in_loop_thread();
  if (drain_timer_ != 0) loop_->cancel(drain_timer_);
  base_acceptors_.clear();
  // Tear every connection down in its own loop before the loops go away.
  for (auto& state : loop_states_) {
    run_and_wait(state->loop, [&state] {
      state->acceptors.clear();
      auto connections = std::move(state->connections);
      // connect_destroyed() reports the close to the user but never runs
      // the on_close hook, which would reach back into this server.
      for (auto& [id, conn] : connections) conn->connect_destroyed();
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
void TcpServer::set_on_peer_closed(PeerClosedCallback cb) {
  callbacks_ = with_callback(callbacks_, &ConnectionCallbacks::on_peer_closed, std::move(cb));
}

Result<void> TcpServer::listen(const Endpoint& address) {
  loop_->assert_in_loop_thread();
  assert(!started_);
  ListenOptions lo;
  lo.nonblocking = true;
  lo.reuse_port = options_.reuse_port || options_.reuse_port_per_loop;
  lo.unix_mode = options_.unix_mode;
  auto listener = TcpListener::bind(address, lo);
  if (!listener) return listener.error();
  endpoints_.push_back(listener->local_endpoint());
  pending_listeners_.push_back(std::move(*listener));
  return {};
}

void TcpServer::start() {
  loop_->assert_in_loop_thread();
  if (started_) return;
  started_ = true;
  pool_->start();
  for (auto* io_loop : pool_->loops()) {
    loop_states_.push_back(std::make_unique<LoopState>(LoopState{io_loop, {}, {}}));
  }
  if (!options_.reuse_port_per_loop) {
    for (auto& listener : pending_listeners_) {
      auto acceptor = std::make_unique<Acceptor>(loop_, std::move(listener));
      acceptor->set_on_new_connection([this](UniqueFd fd, const Endpoint& peer, const Endpoint& local) {
        new_connection(state_of(pool_->next_loop()), std::move(fd), peer, local);
      });
      acceptor->set_on_exhausted([this] { refused_exhausted_.fetch_add(1, std::memory_order_relaxed); });
      acceptor->listen();
      base_acceptors_.push_back(std::move(acceptor));
    }
    pending_listeners_.clear();
    return;
  }
  // One listener per loop and address: the first loop takes the socket bound
  // in listen(); the others bind the same (now known) port with SO_REUSEPORT.
  ListenOptions lo;
  lo.nonblocking = true;
  lo.reuse_port = true;
  for (size_t i = 0; i < loop_states_.size(); ++i) {
    LoopState* state = loop_states_[i].get();
    std::vector<TcpListener> listeners;
    for (size_t e = 0; e < endpoints_.size(); ++e) {
      if (i == 0) {
        listeners.push_back(std::move(pending_listeners_[e]));
        continue;
      }
      // A Unix path has one listener; the first loop accepts for all.
      if (endpoints_[e].is_unix()) continue;
      auto extra = TcpListener::bind(endpoints_[e], lo);
      if (extra) listeners.push_back(std::move(*extra));
    }
    auto setup = [this, state, ls = std::make_shared<std::vector<TcpListener>>(std::move(listeners))] {
      for (auto& listener : *ls) {
        auto acceptor = std::make_unique<Acceptor>(state->loop, std::move(listener));
        acceptor->set_on_new_connection([this, state](UniqueFd fd, const Endpoint& peer, const Endpoint& local) {
          new_connection(state, std::move(fd), peer, local);
        });
        acceptor->set_on_exhausted([this] { refused_exhausted_.fetch_add(1, std::memory_order_relaxed); });
        acceptor->listen();
        state->acceptors.push_back(std::move(acceptor));
      }
    };
    run_and_wait(state->loop, setup);
  }
  pending_listeners_.clear();
}

TcpServer::LoopState* TcpServer::state_of(EventLoop* loop) {
  for (auto& state : loop_states_) {
    if (state->loop == loop) return state.get();
  }
  assert(false && "loop not served by this server");
  return nullptr;
}

// Runs in the accepting loop: the base loop, or the I/O loop itself.
void TcpServer::new_connection(LoopState* state, UniqueFd fd, const Endpoint& peer, const Endpoint& local) {
  accepted_.fetch_add(1, std::memory_order_relaxed);
  if (stopping_.load(std::memory_order_acquire)) return;  // fd closes here
  if (accept_filter_ && !accept_filter_(peer)) {
    refused_by_filter_.fetch_add(1, std::memory_order_relaxed);
    if (on_refused_) on_refused_(peer, make_error_code(Errc::not_allowed));
    return;  // closed before a byte is read or written
  }
  if (options_.max_connections > 0 && open_.load(std::memory_order_relaxed) >= options_.max_connections) {
    refused_over_limit_.fetch_add(1, std::memory_order_relaxed);
    if (on_refused_) on_refused_(peer, make_error_code(Errc::too_many_connections));
    return;  // accepted and closed at once: the client sees EOF, not a hang
  }
  open_.fetch_add(1, std::memory_order_relaxed);
  // TCP options mean nothing on a Unix socket (TCP_NODELAY fails there).
  if (options_.tcp_nodelay && !local.is_unix()) {
    (void)sys::set_int_option(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  }
  if (options_.keepalive && !local.is_unix()) {
    (void)sys::set_int_option(fd.get(), SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
  }
  uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  auto conn = std::make_shared<TcpConnection>(state->loop, id, std::move(fd), local, peer, options_.connection);
  conn->set_callbacks(callbacks_);
  state->loop->run_in_loop([state, conn] {
    state->connections.emplace(conn->id(), conn);
    conn->connect_established();
  });
}

// The on_close hook, in the connection's loop.
void TcpServer::remove_connection(const TcpConnectionPtr& conn) {
  state_of(conn->loop())->connections.erase(conn->id());
  open_.fetch_sub(1, std::memory_order_relaxed);
  // Destroy after the current event: the channel may still be iterating.
  conn->loop()->queue_in_loop([conn] { conn->connect_destroyed(); });
  if (stopping_.load(std::memory_order_acquire)) queue_check_stopped();
}

void TcpServer::stop(std::chrono::milliseconds drain_deadline, std::function<void()> on_stopped) {
  loop_->assert_in_loop_thread();
  if (stopping_.exchange(true)) return;
  on_stopped_ = std::move(on_stopped);
  base_acceptors_.clear();
  for (auto& state : loop_states_) {
    LoopState* s = state.get();
    s->loop->run_in_loop([s] {
      s->acceptors.clear();
      for (auto& [id, conn] : s->connections) conn->shutdown();
    });
  }
  drain_timer_ = loop_->run_after(drain_deadline, [this] {
    drain_timer_ = 0;
    for (auto& state : loop_states_) {
      LoopState* s = state.get();
      s->loop->run_in_loop([s] {
        for (auto& [id, conn] : s->connections) conn->force_close(make_error_code(std::errc::timed_out));
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

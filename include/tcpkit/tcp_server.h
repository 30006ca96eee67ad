/// \file
/// TcpServer: accepts TCP connections on one or more addresses and serves
/// each on an event loop.
///
/// The user owns the server and its base loop; the server owns its acceptors,
/// its LoopThreadPool and (through shared_ptr) its connections. Configure
/// and call listen()/start()/stop() in the base loop's thread; the callbacks
/// run in the loop that owns each connection. Each accepted connection goes
/// to the next loop round-robin, or, with reuse_port_per_loop, every loop
/// has its own SO_REUSEPORT listener and the kernel spreads connections.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tcpkit/callbacks.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tcp_listener.h"
#include "tcpkit/tls_context.h"

namespace tcpkit {

class Acceptor;
class EventLoop;
class LoopThreadPool;

struct ServerOptions {
  int threads = 0;                   ///< I/O threads; 0 serves everything on the base loop
  bool reuse_port_per_loop = false;  ///< one SO_REUSEPORT listener per loop
  bool reuse_port = false;           ///< SO_REUSEPORT on the listener (several processes)
  size_t max_connections = 0;        ///< 0: unlimited; extra clients are accepted and closed
  bool tcp_nodelay = true;           ///< on the listener, inherited by every accepted connection
  bool keepalive = true;             ///< likewise (SO_KEEPALIVE)
  /// "::" serves IPv6 only; false: IPv4 too, through mapped addresses
  /// (as Go's and Node's listeners on "::" do)
  bool v6_only = true;
  unsigned unix_mode = 0;  ///< a Unix socket file's permissions (0660...); 0: the umask's
  /// Every loop that serves connections (the I/O threads', or the base loop
  /// when there are none) busy-polls for this long before it sleeps
  /// (EventLoop::set_busy_poll): each loop keeps its core busy while
  /// traffic flows, and sleeps when there is none. 0: off.
  std::chrono::microseconds busy_poll{0};
  ConnectionOptions connection;  ///< high-water mark, overflow policy, read cap, idle timeout
  /// TLS on every connection (a server context), started before
  /// on_connection; null: plain. Connections that must first read
  /// something in the clear (a PROXY header) call start_tls() themselves.
  std::shared_ptr<const TlsContext> tls;
};

struct ServerStats {
  uint64_t accepted = 0;  ///< every connection that got through accept()
  uint64_t open = 0;
  uint64_t refused_over_limit = 0;  ///< over max_connections
  uint64_t refused_exhausted = 0;   ///< descriptors ran out (EMFILE/ENFILE)
  uint64_t refused_by_filter = 0;   ///< the accept filter said no
};

class TcpServer {
 public:
  TcpServer(EventLoop* loop, ServerOptions options = {});
  ~TcpServer();
  TcpServer(const TcpServer&) = delete;
  TcpServer& operator=(const TcpServer&) = delete;

  /// Binds and listens (SO_REUSEADDR on) on one more address, TCP or Unix
  /// (see TcpListener::bind for a Unix path); call before start().
  Result<void> listen(const Endpoint& address);
  /// Starts the I/O threads and begins accepting. Fails when an I/O loop
  /// cannot be created, or (reuse_port_per_loop) when a loop's own listener
  /// cannot be bound; nothing accepts then, and the caller reports the error
  /// and destroys the server. Calling it again after success does nothing.
  Result<void> start();
  /// Stops accepting, shuts every connection down (FIN after its output
  /// drains), and force-closes what is still open after `drain_deadline`.
  /// `on_stopped` runs in the base loop once every connection is gone.
  /// The on_draining callback, if set, runs for each connection first.
  void stop(std::chrono::milliseconds drain_deadline, std::function<void()> on_stopped = {});

  /// Connections accepted from then on get these (all of them share one
  /// table; TcpConnection::set_on_* changes one connection's).
  void set_on_connection(ConnectionCallback cb);
  void set_on_message(MessageCallback cb);
  void set_on_write_complete(WriteCompleteCallback cb);
  void set_on_high_water_mark(HighWaterMarkCallback cb);
  void set_on_peer_closed(PeerClosedCallback cb);
  /// A connection is ready for traffic: after its TLS handshake, or right
  /// after on_connection without TLS (ConnectionCallbacks::on_handshake).
  void set_on_handshake(ConnectionCallback cb);
  /// stop() is about to shut `conn` down: runs in the connection's loop, just
  /// before its shutdown(), so that what it sends (a goodbye) goes out
  /// before the FIN. Set it before stop().
  void set_on_draining(ConnectionCallback cb) { on_draining_ = std::move(cb); }
  /// A client was accepted and closed at once: over max_connections
  /// (Errc::too_many_connections) or refused by the accept filter
  /// (Errc::not_allowed); runs in the accepting loop.
  void set_on_refused(std::function<void(const Endpoint& peer, std::error_code why)> cb) {
    on_refused_ = std::move(cb);
  }
  /// Decides, before any connection object exists, whether to serve a peer
  /// (e.g. an AccessList); false closes the socket at once. Set it before
  /// start(); it runs in the accepting loop (with reuse_port_per_loop, in
  /// several threads at once), so it must be safe to call concurrently.
  void set_accept_filter(std::function<bool(const Endpoint& peer)> filter) {
    accept_filter_ = std::move(filter);
  }

  /// The bound addresses, with real ports after binding port 0.
  std::vector<Endpoint> listen_endpoints() const { return endpoints_; }
  /// Any thread.
  ServerStats stats() const;
  size_t open_connections() const { return open_.load(std::memory_order_relaxed); }
  EventLoop* base_loop() const { return loop_; }
  /// Every loop that serves connections (valid after start()).
  std::vector<EventLoop*> io_loops() const;

 private:
  struct LoopState;  ///< the connections of one I/O loop, touched only there

  void new_connection(LoopState* state, UniqueFd fd, const Endpoint& peer, const Endpoint& local);
  void remove_connection(const TcpConnectionPtr& conn);
  LoopState* state_of(EventLoop* loop);
  void check_stopped();
  void queue_check_stopped();

  EventLoop* loop_;
  const ServerOptions options_;
  std::unique_ptr<LoopThreadPool> pool_;
  /// options_.connection, shared by every connection instead of copied.
  std::shared_ptr<const ConnectionOptions> connection_options_;
  std::vector<Endpoint> endpoints_;
  std::vector<TcpListener> pending_listeners_;  ///< bound, waiting for start()
  std::vector<std::unique_ptr<LoopState>> loop_states_;
  std::vector<std::unique_ptr<Acceptor>> base_acceptors_;  ///< shared-acceptor mode, base loop
  bool started_ = false;
  std::atomic<bool> stopping_{false};
  std::function<void()> on_stopped_;
  ConnectionCallback on_draining_;
  uint64_t drain_timer_ = 0;
  /// Expires with the server; checked (in the base loop) by queued functors.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);

  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> open_{0};
  std::atomic<uint64_t> refused_over_limit_{0};
  std::atomic<uint64_t> refused_exhausted_{0};
  std::atomic<uint64_t> refused_by_filter_{0};

  /// Handed to every new connection; replaced, never modified, by set_on_*.
  std::shared_ptr<const ConnectionCallbacks> callbacks_;
  std::function<void(const Endpoint&, std::error_code)> on_refused_;
  std::function<bool(const Endpoint&)> accept_filter_;
};

}  // namespace tcpkit

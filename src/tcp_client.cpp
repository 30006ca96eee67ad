#include "tcpkit/tcp_client.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <mutex>
#include <utility>

#include "callback_table.h"
#include "connection_owner.h"
#include "connector.h"
#include "sys.h"
#include "tcpkit/event_loop.h"

namespace tcpkit {

// The client's state lives in the loop, shared with the callbacks it hands
// out (through weak pointers), so the TcpClient object may go away first.
struct TcpClient::Impl : std::enable_shared_from_this<TcpClient::Impl> {
  EventLoop* loop;
  ClientOptions options;
  std::shared_ptr<const ConnectionOptions> connection_options;  // options.connection, shared
  std::shared_ptr<Connector> connector;
  bool reconnect = false;       // loop thread
  int reconnects = 0;           // loop thread: back-off rounds since the last success
  TimerId reconnect_timer = 0;  // loop thread: the reconnect that waits, or 0
  uint64_t next_id = 1;

  mutable std::mutex mutex;
  TcpConnectionPtr connection;  // guarded by mutex

  // Handed to each connection; replaced, never modified, by set_on_*.
  std::shared_ptr<const ConnectionCallbacks> callbacks;
  std::function<void(const Error&, std::chrono::milliseconds)> on_connect_error;

  void connect_in_loop();
  void connected(UniqueFd fd, const Endpoint& peer);
  void closed(const TcpConnectionPtr& conn);
  void stop_in_loop();
  void cancel_reconnect();
  void close_quietly(const TcpConnectionPtr& conn);
};

TcpClient::TcpClient(EventLoop* loop, std::vector<Endpoint> targets, ClientOptions options)
    : impl_(std::make_shared<Impl>()) {
  impl_->loop = loop;
  impl_->options = std::move(options);
  impl_->connection_options = std::make_shared<const ConnectionOptions>(impl_->options.connection);
  RetryPolicy retry{impl_->options.retry, impl_->options.initial_backoff,
                    impl_->options.max_backoff};
  impl_->connector =
      std::make_shared<Connector>(loop, std::move(targets), impl_->options.connect_timeout, retry);
  std::weak_ptr<Impl> weak = impl_;
  impl_->callbacks = with_callback(
      impl_->callbacks, &ConnectionCallbacks::on_close, [weak](const TcpConnectionPtr& c) {
        c->loop()->queue_in_loop([c] { ConnectionOwner::destroyed(*c); });
        if (auto impl = weak.lock()) impl->closed(c);
      });
  impl_->connector->set_on_connected([weak](UniqueFd fd, const Endpoint& peer) {
    if (auto impl = weak.lock()) impl->connected(std::move(fd), peer);
  });
  impl_->connector->set_on_failed([weak](const Error& error, std::chrono::milliseconds retry_in) {
    auto impl = weak.lock();
    if (impl && impl->on_connect_error) impl->on_connect_error(error, retry_in);
  });
}

TcpClient::~TcpClient() {
  stop();
}

void TcpClient::set_on_connection(ConnectionCallback cb) {
  impl_->callbacks =
      with_callback(impl_->callbacks, &ConnectionCallbacks::on_connection, std::move(cb));
}
void TcpClient::set_on_message(MessageCallback cb) {
  impl_->callbacks =
      with_callback(impl_->callbacks, &ConnectionCallbacks::on_message, std::move(cb));
}
void TcpClient::set_on_write_complete(WriteCompleteCallback cb) {
  impl_->callbacks =
      with_callback(impl_->callbacks, &ConnectionCallbacks::on_write_complete, std::move(cb));
}
void TcpClient::set_on_high_water_mark(HighWaterMarkCallback cb) {
  impl_->callbacks =
      with_callback(impl_->callbacks, &ConnectionCallbacks::on_high_water_mark, std::move(cb));
}
void TcpClient::set_on_handshake(ConnectionCallback cb) {
  impl_->callbacks =
      with_callback(impl_->callbacks, &ConnectionCallbacks::on_handshake, std::move(cb));
}
void TcpClient::set_on_peer_closed(PeerClosedCallback cb) {
  impl_->callbacks =
      with_callback(impl_->callbacks, &ConnectionCallbacks::on_peer_closed, std::move(cb));
}
void TcpClient::set_on_connect_error(
    std::function<void(const Error&, std::chrono::milliseconds)> cb) {
  impl_->on_connect_error = std::move(cb);
}

void TcpClient::connect() {
  impl_->loop->run_in_loop([impl = impl_] { impl->connect_in_loop(); });
}

void TcpClient::disconnect() {
  impl_->loop->run_in_loop([impl = impl_] {
    impl->reconnect = false;
    if (auto conn = impl->connection) conn->shutdown();
  });
}

void TcpClient::stop() {
  auto impl = impl_;
  if (impl->loop->is_in_loop_thread() || !impl->loop->is_running()) {
    // Not running: nothing can call back concurrently; the queued stop
    // runs if the loop is started again.
    impl->loop->run_in_loop([impl] { impl->stop_in_loop(); });
    return;
  }
  impl->loop->run_in_loop_and_wait([impl] { impl->stop_in_loop(); });
}

void TcpClient::reset_backoff() {
  impl_->loop->run_in_loop([impl = impl_] { impl->reconnects = 0; });
}

TcpConnectionPtr TcpClient::connection() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->connection;
}

// A second attempt would replace the live connection, or the one it is
// about to make: connect() starts one only when there is neither. A
// reconnect that waits after a lost connection starts now instead.
void TcpClient::Impl::connect_in_loop() {
  if (connection || connector->active()) return;
  cancel_reconnect();
  reconnect = options.retry;
  reconnects = 0;
  connector->start();
}

void TcpClient::Impl::connected(UniqueFd fd, const Endpoint& peer) {
  // TCP_NODELAY fails on a Unix socket, where there is no Nagle to turn off.
  if (options.tcp_nodelay && !peer.is_unix()) {
    (void)sys::set_int_option(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  }
  Endpoint local = sys::local_endpoint(fd.get());
  auto conn = std::make_shared<TcpConnection>(loop, next_id++, std::move(fd), local, peer,
                                              connection_options);
  ConnectionOwner::set_callbacks(*conn, callbacks);
  TcpConnectionPtr previous;
  {
    std::lock_guard lock(mutex);
    previous = std::exchange(connection, conn);
  }
  // connect_in_loop() lets no attempt start beside a connection; were one
  // to, the connection it replaces must still leave the loop properly.
  if (previous) close_quietly(previous);
  if (options.reset_backoff_on_connect) reconnects = 0;
  ConnectionOwner::established(*conn, options.tls.get(), options.tls_server_name);
}

void TcpClient::Impl::closed(const TcpConnectionPtr& conn) {
  {
    std::lock_guard lock(mutex);
    if (connection == conn) connection.reset();
  }
  if (!reconnect) return;
  // Reconnect after a jittered delay, growing while the server stays away.
  auto delay = connector->backoff_for(reconnects++);
  std::weak_ptr<Impl> weak = weak_from_this();
  reconnect_timer = loop->run_after(delay, [weak] {
    auto impl = weak.lock();
    if (!impl) return;
    impl->reconnect_timer = 0;
    if (impl->reconnect) impl->connector->start();
  });
}

void TcpClient::Impl::stop_in_loop() {
  reconnect = false;
  cancel_reconnect();
  connector->stop();
  TcpConnectionPtr conn;
  {
    std::lock_guard lock(mutex);
    conn = std::move(connection);
  }
  if (conn) close_quietly(conn);
}

// A reconnect left waiting would start a second connection beside the one
// a later connect() makes.
void TcpClient::Impl::cancel_reconnect() {
  if (reconnect_timer != 0) loop->cancel(reconnect_timer);
  reconnect_timer = 0;
}

// No user callback may run once stop() has returned; the close hook stays,
// to destroy the connection. A loop that is no longer running (a client
// destroyed after run() returned, before its loop) would never run a queued
// close, and its destructor would free the queued, still registered
// connection: there the connection is torn down at once, as a server's
// destructor does.
void TcpClient::Impl::close_quietly(const TcpConnectionPtr& conn) {
  auto closing = std::make_shared<ConnectionCallbacks>();
  closing->on_close = callbacks->on_close;
  ConnectionOwner::set_callbacks(*conn, std::move(closing));
  if (!loop->is_running()) {
    ConnectionOwner::destroyed(*conn);
    return;
  }
  conn->force_close();
}

}  // namespace tcpkit

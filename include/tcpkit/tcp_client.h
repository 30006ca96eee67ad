/// \file
/// TcpClient: connects to a server on an event loop and owns at most one
/// connection, reconnecting when asked to.
///
/// The user owns the client; it runs on one loop. connect(), disconnect(),
/// stop() and the destructor are safe from any thread: they forward to the
/// loop, and the destructor (and stop) wait until the loop has let go, so no
/// callback runs after they return — also in the middle of a retry. The
/// client may be destroyed in one of its own callbacks (on_message included).
/// When retrying, failed connects and lost connections are retried after a
/// capped exponential back-off with random jitter.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "tcpkit/callbacks.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tls_context.h"

namespace tcpkit {

class EventLoop;

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{5000};
  bool retry = false;  ///< retry connects and reconnect after a close
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{30000};
  /// With retry: whether a connection, once made, ends the back-off, so that
  /// the reconnect after it waits about initial_backoff again. Set it false
  /// for a peer that may accept and then fail at once (a port that is not
  /// the protocol's server, a refused login): the back-off then grows on
  /// every loss until reset_backoff() says a connection has proved itself.
  bool reset_backoff_on_connect = true;
  bool tcp_nodelay = true;
  ConnectionOptions connection;
  /// TLS on the connection (a client context), started before
  /// on_connection; null: plain. The server's name to verify, when it is
  /// not the context's.
  std::shared_ptr<const TlsContext> tls;
  std::string tls_server_name;
};

class TcpClient {
 public:
  /// `targets` are tried in order (e.g. every address a name resolved to).
  /// An empty list (a name that resolved to nothing) is no error here:
  /// connect() reports it through on_connect_error, as Errc::name_not_found
  /// with no retry.
  TcpClient(EventLoop* loop, std::vector<Endpoint> targets, ClientOptions options = {});
  TcpClient(EventLoop* loop, const Endpoint& target, ClientOptions options = {})
      : TcpClient(loop, std::vector<Endpoint>{target}, std::move(options)) {}
  ~TcpClient();
  TcpClient(const TcpClient&) = delete;
  TcpClient& operator=(const TcpClient&) = delete;

  /// Set callbacks before connect().
  void set_on_connection(ConnectionCallback cb);
  void set_on_message(MessageCallback cb);
  void set_on_write_complete(WriteCompleteCallback cb);
  void set_on_high_water_mark(HighWaterMarkCallback cb);
  void set_on_peer_closed(PeerClosedCallback cb);
  /// A connection is ready for traffic: after its TLS handshake, or right
  /// after on_connection without TLS (ConnectionCallbacks::on_handshake).
  void set_on_handshake(ConnectionCallback cb);
  /// A connect attempt round failed; `retry_in` is negative when no retry follows.
  void set_on_connect_error(
      std::function<void(const Error&, std::chrono::milliseconds retry_in)> cb);

  /// Any thread. Starts connecting, unless a connection is open (also one
  /// half-closed by disconnect()) or an attempt, or its retry back-off, is
  /// under way: then it does nothing, for the client owns at most one
  /// connection; stop() first to start afresh. A reconnect that waits after a
  /// lost connection starts at once, with a fresh back-off.
  void connect();
  /// Any thread. Half-closes the current connection; no reconnect afterwards.
  void disconnect();
  /// Any thread. Stops connecting and retrying (a reconnect that waits is
  /// cancelled), closes the connection, and waits until the loop is done with
  /// this client. Called in the loop's thread while the loop is not running
  /// (a client destroyed after run() returned), it closes the connection at
  /// once, without the loop. Called in another thread while the loop is not
  /// running, it queues the close for the loop's next run(), and a loop destroyed
  /// without running again would free a connection still registered in it:
  /// destroy a client in its loop's thread, or before its loop stops.
  void stop();

  /// Any thread: the live connection, or null.
  TcpConnectionPtr connection() const;

  /// Any thread. The next reconnect waits about initial_backoff again (see
  /// ClientOptions::reset_backoff_on_connect).
  void reset_backoff();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tcpkit

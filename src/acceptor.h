// Acceptor: a listening socket on one loop that hands out new connections.
//
// Internal; owned by TcpServer, used in its loop's thread only. When the
// process runs out of descriptors (EMFILE/ENFILE) accept() would fail again
// at once and a level-triggered loop would spin at 100% CPU. The acceptor
// keeps one spare descriptor: it frees it, accepts the waiting connection,
// closes that at once (the client sees a clean close, not a hang), reopens
// the spare, and pauses accepting briefly so freed descriptors can return.
// The trick is from libev's documentation (also used by muduo).
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_listener.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class Channel;
class EventLoop;

class Acceptor {
 public:
  // `local`: the address the client reached, which is the listener's own
  // unless it listens on a wildcard (then the kernel is asked, once per
  // connection).
  using NewConnection =
      std::function<void(UniqueFd fd, const Endpoint& peer, const Endpoint& local)>;
  static constexpr std::chrono::milliseconds kExhaustedBackoff{100};

  Acceptor(EventLoop* loop, TcpListener listener);
  ~Acceptor();

  void set_on_new_connection(NewConnection cb) { on_new_connection_ = std::move(cb); }
  void listen();  // start accepting
  void stop();    // stop accepting and unregister (listener stays bound until destroyed)
  Endpoint local_endpoint() const { return listener_.local_endpoint(); }
  // Called each time a connection is refused because descriptors ran out.
  void set_on_exhausted(std::function<void()> cb) { on_exhausted_ = std::move(cb); }

 private:
  void handle_read();
  void accept_batch(const bool& destroyed);
  void recover_from_exhaustion();

  EventLoop* loop_;
  TcpListener listener_;
  Endpoint listening_on_;  // the listener's address, if not a wildcard
  std::unique_ptr<Channel> channel_;
  UniqueFd spare_fd_;
  NewConnection on_new_connection_;
  std::function<void()> on_exhausted_;
  uint64_t backoff_timer_ = 0;
  bool stopped_ = false;
  // While handle_read() runs: its flag, which the destructor sets.
  bool* destroyed_ = nullptr;
  bool wildcard_ = false;
};

}  // namespace tcpkit

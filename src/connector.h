// Connector: a non-blocking connect with a timeout, and retries.
//
// Internal; owned by TcpClient through shared_ptr, used in its loop's thread
// only (start/stop forward there). It tries each resolved address in turn;
// when all fail it reports the error and, if retrying, tries again after a
// capped exponential back-off with random jitter, so that thousands of
// clients of a restarted server do not reconnect in lock-step.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class Channel;

struct RetryPolicy {
  bool enabled = false;
  std::chrono::milliseconds initial{500};
  std::chrono::milliseconds max{30000};
};

class Connector : public std::enable_shared_from_this<Connector> {
 public:
  using Connected = std::function<void(UniqueFd fd, const Endpoint& peer)>;
  // `retry_in` is the delay before the next attempt, or negative for none.
  using Failed = std::function<void(const Error& error, std::chrono::milliseconds retry_in)>;

  Connector(EventLoop* loop, std::vector<Endpoint> targets, std::chrono::milliseconds timeout,
            RetryPolicy retry);
  ~Connector();

  void set_on_connected(Connected cb) { on_connected_ = std::move(cb); }
  void set_on_failed(Failed cb) { on_failed_ = std::move(cb); }

  // Loop thread. start() begins with the first address and a fresh back-off;
  // with no address at all it fails at once (Errc::name_not_found), with no
  // retry. active(): an attempt, or the wait before a retry, is under way.
  void start();
  void stop();
  bool active() const { return active_; }
  // The back-off delay for attempt `n` (0-based), jitter included.
  std::chrono::milliseconds backoff_for(int attempt);

 private:
  void attempt();
  void handle_event();
  void finish_attempt();
  void fail(const Error& error);

  EventLoop* loop_;
  const std::vector<Endpoint> targets_;
  const std::chrono::milliseconds timeout_;
  const RetryPolicy retry_;
  size_t target_index_ = 0;
  int failed_rounds_ = 0;
  bool active_ = false;
  UniqueFd fd_;
  std::unique_ptr<Channel> channel_;
  TimerId timeout_timer_ = 0;
  TimerId retry_timer_ = 0;
  std::minstd_rand rng_;
  Connected on_connected_;
  Failed on_failed_;
};

}  // namespace tcpkit

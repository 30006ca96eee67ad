// RelayApp: `tcpkit relay` on top of TcpServer — accepts clients, pairs each
// with an upstream connection (RelayPair) and logs what happens.
//
// Created and run by relay_cmd.cpp in the main thread, which owns the base
// loop. Pairs live in the I/O loops; the registry of live pairs and the log
// are shared across them and guarded. On stop the loop quits only once every
// pair has finished, so no connection outlives the loops it runs on.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "common/logger.h"
#include "relay/relay_options.h"
#include "relay/toxic.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_server.h"

namespace tcpkit::cli {

class RelayPair;

class RelayApp {
 public:
  RelayApp(EventLoop* loop, RelayOptions options);
  ~RelayApp();
  RelayApp(const RelayApp&) = delete;
  RelayApp& operator=(const RelayApp&) = delete;

  // Binds every --listen address. The error names the address.
  Result<void> listen();
  // Starts the I/O threads and accepting; the error names what failed.
  Result<void> start();
  // Base loop. First SIGINT/SIGTERM: stop accepting, let pairs drain, quit.
  void begin_stop();
  // Base loop: stop accepting, close every pair within `drain`, then run
  // `on_stopped` (in the base loop) instead of quitting it. The chaos API
  // uses this for one proxy among several; `why` is each pair's reason
  // for its log line ("proxy disabled").
  void stop(std::chrono::milliseconds drain, const std::string& why,
            std::function<void()> on_stopped);
  // Any thread: the toxics for pairs from now on, and for live ones.
  void set_toxics(const ToxicListPtr& toxics);

  std::vector<Endpoint> listen_endpoints() const { return server_.listen_endpoints(); }
  const RelayOptions& options() const { return options_; }
  uint64_t relayed() const { return relayed_.load(std::memory_order_relaxed); }
  uint64_t open_pairs();
  uint64_t bytes_up() const { return bytes_up_.load(std::memory_order_relaxed); }
  uint64_t bytes_down() const { return bytes_down_.load(std::memory_order_relaxed); }

 private:
  size_t note_stopping(const std::string& why);
  void on_connection(const TcpConnectionPtr& conn);
  void pair_connected(const RelayPair& pair);
  void pair_finished(const std::shared_ptr<RelayPair>& pair);
  void maybe_quit();

  EventLoop* loop_;
  const RelayOptions options_;
  Logger log_;
  TcpServer server_;
  std::mutex mutex_;
  std::unordered_set<std::shared_ptr<RelayPair>> pairs_;  // guarded by mutex_
  ToxicListPtr toxics_;                                   // guarded by mutex_
  std::function<void()> on_stopped_;                      // base loop; null: quit the loop
  std::atomic<bool> stopping_{false};
  bool server_stopped_ = false;  // base loop
  bool quitting_ = false;        // base loop
  std::atomic<uint64_t> relayed_{0};
  std::atomic<uint64_t> bytes_up_{0};
  std::atomic<uint64_t> bytes_down_{0};
  // Expires with the app; functors queued to the base loop check it there.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace tcpkit::cli

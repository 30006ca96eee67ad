/// \file
/// LoopThreadPool: N EventLoopThreads, handed out round-robin.
///
/// Owned by whoever builds servers on it (usually a TcpServer). start() and
/// the destructor run in the base loop's thread; next_loop() and loops() too.
/// With zero threads every caller gets the base loop, so a single-threaded
/// server needs no special case. The destructor quits and joins every thread.
#pragma once

#include <memory>
#include <vector>

#include "tcpkit/result.h"

namespace tcpkit {

class EventLoop;
class EventLoopThread;

class LoopThreadPool {
 public:
  LoopThreadPool(EventLoop* base_loop, int threads);
  ~LoopThreadPool();
  LoopThreadPool(const LoopThreadPool&) = delete;
  LoopThreadPool& operator=(const LoopThreadPool&) = delete;

  /// Starts the threads and returns once every loop is running. When a loop
  /// cannot be created, the threads started so far are stopped again and the
  /// error is returned; start() may then be tried again.
  Result<void> start();
  /// Round-robin over the pool's loops (the base loop when there are none).
  EventLoop* next_loop();
  /// Every loop that serves connections: the pool's, or the base loop alone.
  std::vector<EventLoop*> loops() const;
  EventLoop* base_loop() const { return base_loop_; }

 private:
  EventLoop* base_loop_;
  int thread_count_;
  size_t next_ = 0;
  std::vector<std::unique_ptr<EventLoopThread>> threads_;
  std::vector<EventLoop*> loops_;
};

}  // namespace tcpkit

/// \file
/// EventLoopThread: a thread that creates its own EventLoop and runs it.
///
/// The object is owned by whoever wants a loop in the background: a
/// LoopThreadPool (one per I/O thread), a load generator's workers, a test.
/// Construct, start(), stop() and destroy it from one thread, which must not
/// be the loop's own thread (stop() joins it). The loop itself belongs to the
/// new thread, is created and destroyed there, and is reached from outside
/// only through its "any thread" calls (run_in_loop(), run_in_loop_and_wait(),
/// quit()).
#pragma once

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "tcpkit/io_backend.h"
#include "tcpkit/result.h"

namespace tcpkit {

class EventLoop;

class EventLoopThread {
 public:
  /// The loop will wait on `backend` (EventLoop::create()).
  explicit EventLoopThread(IoBackend backend = IoBackend::kDefault) : backend_(backend) {}
  /// Quits the loop and joins the thread (stop()).
  ~EventLoopThread();
  EventLoopThread(const EventLoopThread&) = delete;
  EventLoopThread& operator=(const EventLoopThread&) = delete;

  /// Starts the thread and returns once its loop is running, so work queued
  /// right after runs without delay. Fails, with EventLoop::create()'s error,
  /// when the loop cannot be created; the thread has then ended. Call once.
  Result<void> start();

  /// Quits the loop (unless it has quit already) and joins the thread. Work
  /// queued before stop() still runs (EventLoop::run() drains its queue).
  /// Does nothing when the thread is not running.
  void stop();

  /// The running loop: valid from a successful start() until stop(), or until
  /// something else quits it. nullptr before start().
  EventLoop* loop() const { return loop_.load(std::memory_order_acquire); }

 private:
  void run_thread(std::promise<Result<EventLoop*>> started);

  IoBackend backend_;
  std::thread thread_;
  /// Written by the loop thread as it creates and destroys the loop, read by
  /// stop(): quitting under mutex_ keeps the loop alive until quit() returns.
  std::mutex mutex_;
  std::atomic<EventLoop*> loop_{nullptr};
};

}  // namespace tcpkit

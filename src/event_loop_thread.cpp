#include "tcpkit/event_loop_thread.h"

#include <cassert>

#include "tcpkit/event_loop.h"

namespace tcpkit {

EventLoopThread::~EventLoopThread() {
  stop();
}

Result<void> EventLoopThread::start() {
  assert(!thread_.joinable() && "EventLoopThread::start() called twice");
  std::promise<Result<EventLoop*>> started;
  auto created = started.get_future();
  thread_ = std::thread(
      [this, started = std::move(started)]() mutable { run_thread(std::move(started)); });
  auto loop = created.get();
  if (!loop) {
    thread_.join();
    return loop.error();
  }
  // The loop exists; one round trip through its queue proves it is running.
  (*loop)->run_in_loop_and_wait([] {});
  return {};
}

// The loop is created, run and destroyed here, by the thread that owns it
// (its destructor asserts that).
void EventLoopThread::run_thread(std::promise<Result<EventLoop*>> started) {
  auto loop = EventLoop::create(backend_);
  if (!loop) {
    started.set_value(loop.error());
    return;
  }
  loop_.store(loop->get(), std::memory_order_release);
  started.set_value(loop->get());
  (*loop)->run();
  {
    std::lock_guard lock(mutex_);
    loop_.store(nullptr, std::memory_order_release);
  }
  loop->reset();
}

void EventLoopThread::stop() {
  if (!thread_.joinable()) return;
  assert(thread_.get_id() != std::this_thread::get_id() &&
         "EventLoopThread stopped from its own loop");
  {
    std::lock_guard lock(mutex_);
    if (EventLoop* loop = loop_.load(std::memory_order_acquire)) loop->quit();
  }
  thread_.join();
}

}  // namespace tcpkit

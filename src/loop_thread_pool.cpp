#include "tcpkit/loop_thread_pool.h"

#include <future>

#include "tcpkit/event_loop.h"

namespace tcpkit {

LoopThreadPool::LoopThreadPool(EventLoop* base_loop, int threads)
    : base_loop_(base_loop), thread_count_(threads) {}

LoopThreadPool::~LoopThreadPool() {
  for (auto* loop : loops_) loop->quit();
  for (auto& t : threads_) t.join();
}

void LoopThreadPool::start() {
  base_loop_->assert_in_loop_thread();
  for (int i = 0; i < thread_count_; ++i) {
    std::promise<EventLoop*> ready;
    auto loop_future = ready.get_future();
    threads_.emplace_back([&ready] {
      // The loop lives on this thread's stack: it is destroyed by the thread
      // that owns it, after run() returns.
      EventLoop loop;
      ready.set_value(&loop);
      loop.run();
    });
    loops_.push_back(loop_future.get());
  }
}

EventLoop* LoopThreadPool::next_loop() {
  base_loop_->assert_in_loop_thread();
  if (loops_.empty()) return base_loop_;
  EventLoop* loop = loops_[next_];
  next_ = (next_ + 1) % loops_.size();
  return loop;
}

std::vector<EventLoop*> LoopThreadPool::loops() const {
  if (loops_.empty()) return {base_loop_};
  return loops_;
}

}  // namespace tcpkit

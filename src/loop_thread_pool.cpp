#include "tcpkit/loop_thread_pool.h"

#include "tcpkit/event_loop.h"
#include "tcpkit/event_loop_thread.h"

namespace tcpkit {

LoopThreadPool::LoopThreadPool(EventLoop* base_loop, int threads)
    : base_loop_(base_loop), thread_count_(threads) {}

// Out of line: EventLoopThread is incomplete in the header.
LoopThreadPool::~LoopThreadPool() = default;

Result<void> LoopThreadPool::start() {
  base_loop_->assert_in_loop_thread();
  for (int i = 0; i < thread_count_; ++i) {
    // The base loop's backend as it runs, not as asked for: where io_uring
    // fell back to epoll once, the I/O loops do not try again.
    auto thread = std::make_unique<EventLoopThread>(base_loop_->backend());
    if (auto r = thread->start(); !r) {
      threads_.clear();  // stops and joins the ones already running
      loops_.clear();
      return r;
    }
    loops_.push_back(thread->loop());
    threads_.push_back(std::move(thread));
  }
  return {};
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

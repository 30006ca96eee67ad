#include "tcpkit/coro_task.h"

#include <memory>
#include <string>

#include "fatal.h"

namespace tcpkit::coro {
namespace detail {

// The tasks a loop owns (spawned and not finished), kept as the loop's
// extension so that they go with it: the loop destroys this list first in
// its destructor, and each frame destroyed then unhooks its awaitables
// while timers and connections can still be told.
struct TaskList : EventLoop::Extension {
  explicit TaskList(EventLoop* l) : loop(l) {}
  EventLoop* loop;
  PromiseBase* head = nullptr;

  void push(PromiseBase* p) {
    p->owner = this;
    p->next = head;
    if (head != nullptr) head->prev = p;
    head = p;
  }
  void unlink(PromiseBase* p) {
    if (p->prev != nullptr) p->prev->next = p->next;
    if (p->next != nullptr) p->next->prev = p->prev;
    if (head == p) head = p->next;
    p->prev = p->next = nullptr;
    p->owner = nullptr;
  }
  ~TaskList() override;
};

namespace {
// Its address is the key of the loop's TaskList.
const char kTaskListKey = 0;
// The loop whose tasks this thread is destroying (its destructor runs): the
// loop no longer finds its extensions then.
thread_local EventLoop* t_closing_loop = nullptr;

TaskList& task_list(EventLoop* loop) {
  if (auto* ext = loop->extension(&kTaskListKey)) return static_cast<TaskList&>(*ext);
  return static_cast<TaskList&>(
      loop->add_extension(&kTaskListKey, std::make_unique<TaskList>(loop)));
}

void start_in_loop(EventLoop* loop, std::coroutine_handle<Promise<void>> frame) {
  PromiseBase& p = frame.promise();
  p.frame = frame;
  task_list(loop).push(&p);
  frame.resume();
}

// A frame in a queued functor (std::function needs a copyable target): if
// the loop is destroyed before it runs the start, the frame goes with it.
struct PendingStart {
  PendingStart() = default;
  PendingStart(const PendingStart&) = delete;
  PendingStart& operator=(const PendingStart&) = delete;
  std::coroutine_handle<Promise<void>> frame;
  ~PendingStart() {
    if (frame) frame.destroy();
  }
};
}  // namespace

TaskList::~TaskList() {
  EventLoop* outer = std::exchange(t_closing_loop, loop);
  // A frame being destroyed may spawn or end other tasks: take one at a time.
  while (head != nullptr) {
    PromiseBase* p = head;
    unlink(p);
    p->frame.destroy();
  }
  t_closing_loop = outer;
}

namespace {
// Loop thread of the task's owner: the ended task leaves the list and goes.
void end_spawned(PromiseBase* p, std::coroutine_handle<> frame) {
  p->owner->unlink(p);
  frame.destroy();
}
}  // namespace

bool loop_closing(EventLoop* loop) {
  return t_closing_loop == loop;
}

void abort_task_misuse(const char* what) {
  tcpkit::detail::fatal("%s", what);
}

namespace {
// The awaited task this thread runs inline in run_awaited(), if any.
thread_local PromiseBase* t_running_inline = nullptr;
}  // namespace

bool run_awaited(std::coroutine_handle<> child, PromiseBase& promise,
                 std::coroutine_handle<> awaiting) {
  promise.continuation = awaiting;
  // On this stack, not in the child's frame: a child that suspended may
  // already have ended on another loop (after a resume_on()), resumed its
  // awaiter there, and been freed by the time resume() returns here.
  bool ended = false;
  promise.ended_inline = &ended;
  PromiseBase* outer = std::exchange(t_running_inline, &promise);
  child.resume();
  t_running_inline = outer;
  return !ended;
}

std::coroutine_handle<> PromiseBase::finish(std::coroutine_handle<> self) noexcept {
  if (continuation) {
    // Still inside its awaiter's run_awaited() on this thread: return there.
    // Ended later (resumed by an event, or on another loop's thread after
    // a resume_on()): resume the awaiter.
    if (t_running_inline == this) {
      *ended_inline = true;
      return std::noop_coroutine();
    }
    return continuation;
  }
  if (owner == nullptr) return std::noop_coroutine();
  // A spawned task ended: nobody waits for its (void) result. Its list
  // belongs to the loop that spawned it; a task that hopped away with
  // resume_on() and ended there leaves the list from that loop's queue
  // (suspended at its end until then; a loop destroyed first destroys it
  // with the rest of its list).
  if (!owner->loop->is_in_loop_thread()) {
    owner->loop->queue_in_loop([p = this, self] { end_spawned(p, self); });
    return std::noop_coroutine();
  }
  end_spawned(this, self);
  return std::noop_coroutine();
}

void spawn_frame(EventLoop* loop, std::coroutine_handle<Promise<void>> frame) {
  if (loop->is_in_loop_thread()) {
    start_in_loop(loop, frame);
    return;
  }
  auto pending = std::make_shared<PendingStart>();
  pending->frame = frame;
  loop->queue_in_loop([loop, pending] { start_in_loop(loop, std::exchange(pending->frame, {})); });
}

void Deadline::arm(EventLoop::Clock::duration limit, std::coroutine_handle<> awaiting,
                   Expire expire, void* owner) {
  loop_ = EventLoop::current();
  assert(loop_ != nullptr && "timeout() outside a loop thread");
  timer_ = loop_->run_after(limit, [this, awaiting, expire, owner] {
    timer_ = 0;
    expired_ = true;
    expire(owner);  // the child's awaitables unhook before the parent goes on
    awaiting.resume();
  });
}

void Deadline::cancel() {
  if (timer_ == 0) return;
  loop_->cancel(std::exchange(timer_, 0));
}

Error Deadline::timeout_error(EventLoop::Clock::duration limit) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(limit).count();
  return Error(std::make_error_code(std::errc::timed_out),
               "no result within " + std::to_string(ms) + " ms");
}

}  // namespace detail

void spawn(EventLoop* loop, Task<void> task) {
  detail::check_startable(task.handle(), "spawn() of an empty coro::Task",
                          "spawn() of a finished coro::Task",
                          "spawn() of a coro::Task that a co_await runs");
  detail::spawn_frame(loop, task.release());
}

SleepAwaiter::~SleepAwaiter() {
  if (timer_ != 0) loop_->cancel(timer_);
}

void SleepAwaiter::await_suspend(std::coroutine_handle<> h) {
  loop_ = EventLoop::current();
  assert(loop_ != nullptr && "sleep_for() outside a loop thread");
  timer_ = loop_->run_after(delay_, [this, h] {
    timer_ = 0;
    h.resume();
  });
}

namespace {
enum : int { kPending = 0, kResumed = 1, kCancelled = 2 };
}  // namespace

// The hop and the awaiter's destruction race only when the task is destroyed
// while its hop is queued: whichever claims the hop first decides, so the
// other loop never resumes a frame that is gone.
ResumeOnAwaiter::~ResumeOnAwaiter() {
  if (!hop_) return;
  int expected = kPending;
  hop_->compare_exchange_strong(expected, kCancelled, std::memory_order_acq_rel);
}

void ResumeOnAwaiter::await_suspend(std::coroutine_handle<> h) {
  hop_ = std::make_shared<std::atomic<int>>(kPending);
  // Nothing of this awaiter is touched after the queueing: the task may run
  // (and this awaiter go) on the other thread before queue_in_loop returns.
  loop_->queue_in_loop([hop = hop_, h] {
    int expected = kPending;
    if (hop->compare_exchange_strong(expected, kResumed, std::memory_order_acq_rel)) h.resume();
  });
}

}  // namespace tcpkit::coro

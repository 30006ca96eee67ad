/// \file
/// coro::Task: a C++20 coroutine that an event loop runs, and the awaitables
/// that only need the loop (sleep_for, resume_on, timeout).
///
/// The coroutine layer is a thin, optional layer over the reactor (one loop
/// per thread, no executor): a Task is lazy, runs in the thread of the loop
/// that resumes it, and belongs either to the Task object that holds it
/// (which destroys it with itself) or, once spawn() hands it over, to a
/// loop, which destroys it when it finishes or when the loop is destroyed.
/// Destroying a suspended task is how the layer cancels: every awaitable of
/// the layer unhooks itself from what it waits on (a connection, a timer,
/// an acceptor) when its task's frame goes, so nothing resumes it later.
///
/// Errors are values: the awaitables return Result<T>. The layer never
/// throws; an exception escaping a task terminates the program, as any
/// exception through the library would.
#pragma once

#include <atomic>
#include <cassert>
#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "tcpkit/detail/saturate.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"

namespace tcpkit::coro {

template <typename T = void>
class Task;

namespace detail {

/// The part of every task's promise that does not depend on its value: who
/// to resume when it finishes, and, for a spawned task, the loop's list of
/// the tasks it owns (an intrusive list: spawning allocates nothing more).
struct PromiseBase {
  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <typename Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
      return h.promise().finish(h);
    }
    void await_resume() const noexcept {}
  };

  std::suspend_always initial_suspend() const noexcept { return {}; }
  FinalAwaiter final_suspend() const noexcept { return {}; }
  [[noreturn]] void unhandled_exception() const noexcept { std::terminate(); }

  /// At the final suspension point: resume the awaiting task, or, for a
  /// spawned one, leave the loop's list and free the frame.
  std::coroutine_handle<> finish(std::coroutine_handle<> self) noexcept;

  std::coroutine_handle<> continuation;
  /// While its awaiter runs it inline (run_awaited()): the flag, on the
  /// awaiter's stack, that it ended there; the awaiter then goes on without
  /// a resume.
  bool* ended_inline = nullptr;
  // For a spawned task: its place in the owning loop's list.
  PromiseBase* prev = nullptr;
  PromiseBase* next = nullptr;
  struct TaskList* owner = nullptr;
  std::coroutine_handle<> frame;
};

template <typename T>
struct Promise : PromiseBase {
  Task<T> get_return_object() noexcept;
  template <typename U>
  void return_value(U&& value) {
    value_.emplace(std::forward<U>(value));
  }
  std::optional<T> value_;
};

template <>
struct Promise<void> : PromiseBase {
  Task<void> get_return_object() noexcept;
  void return_void() const noexcept {}
};

/// Runs the awaited task `child` from its awaiter's await_suspend, to its
/// end or its first suspension: false when it ended (the awaiting task goes
/// on at once), true when it suspended (it resumes `awaiting` when it ends).
/// A task that ends inline returns to here rather than resume its awaiter,
/// so a loop of awaits that complete at once keeps a flat stack in every
/// build (symmetric transfer is a tail call only where the compiler makes
/// it one: not GCC's at -O0, nor under ASan).
bool run_awaited(std::coroutine_handle<> child, PromiseBase& promise,
                 std::coroutine_handle<> awaiting);
/// Hands a task to `loop`, which starts it (now, in its own thread, or
/// once it runs the queued start) and frees it when it ends.
void spawn_frame(EventLoop* loop, std::coroutine_handle<Promise<void>> frame);
/// Loop thread: whether `loop` is destroying its tasks (it is being destroyed).
bool loop_closing(EventLoop* loop);
/// A Task awaited, spawned or given to timeout() when it is empty, has
/// finished (awaited twice, say) or already runs for another co_await:
/// misuse, which would resume a null, finished or suspended frame (and
/// leave its first awaiter waiting for ever). Prints what and aborts, in
/// every build.
[[noreturn]] void abort_task_misuse(const char* what);
/// Aborts with `empty`, `finished` or `started` unless `h` is a frame that
/// nothing has started.
template <typename P>
void check_startable(std::coroutine_handle<P> h, const char* empty, const char* finished,
                     const char* started) {
  if (!h) abort_task_misuse(empty);
  if (h.done()) abort_task_misuse(finished);
  if (h.promise().continuation) abort_task_misuse(started);
}

}  // namespace detail

/// A lazy coroutine returning T. Owned by the Task object until spawned or
/// awaited; move-only; destroying a Task that has not finished destroys its
/// frame, which cancels what it waits on. `co_await std::move(task)` runs it
/// on the awaiting task's thread and gives its value, once: awaiting (or
/// spawning) an empty Task, one that has finished, or one that another
/// co_await runs already, aborts with a message in every build.
template <typename T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::Promise<T>;
  using Handle = std::coroutine_handle<promise_type>;

  Task() = default;
  explicit Task(Handle h) : h_(h) {}
  Task(Task&& other) noexcept : h_(std::exchange(other.h_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      reset();
      h_ = std::exchange(other.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  bool valid() const { return static_cast<bool>(h_); }
  bool done() const { return h_ && h_.done(); }
  /// Destroys the frame (finished or suspended) now.
  void reset() {
    if (h_) std::exchange(h_, {}).destroy();
  }
  /// Gives up ownership of the frame (for spawn()).
  Handle release() { return std::exchange(h_, {}); }
  Handle handle() const { return h_; }

  struct Awaiter {
    Handle h;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> awaiting) noexcept {
      return detail::run_awaited(h, h.promise(), awaiting);
    }
    T await_resume() {
      if constexpr (!std::is_void_v<T>) return std::move(*h.promise().value_);
    }
  };
  Awaiter operator co_await() && {
    detail::check_startable(h_, "co_await on an empty coro::Task",
                            "co_await on a finished coro::Task",
                            "co_await on a coro::Task that another co_await runs");
    return Awaiter{h_};
  }

 private:
  Handle h_;
};

namespace detail {
template <typename T>
Task<T> Promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}
}  // namespace detail

/// Any thread. Hands `task` to `loop`, which runs it in its thread (at once
/// when called there, else from its queue) and owns it from now on: the
/// frame is freed when the task ends, or, still suspended, when the loop is
/// destroyed (the task's awaitables unhook themselves then). A task must
/// therefore use only what outlives its loop, or what it owns itself
/// (a Stream it accepted, say); what it shares, it shares through
/// shared_ptr or by value. A spawned task is resumed only in `loop`'s
/// thread, unless it hops with resume_on(). Spawning an empty Task, or one
/// that has finished, aborts with a message in every build.
void spawn(EventLoop* loop, Task<void> task);

/// Awaits `delay` on the current thread's loop (the task's loop): resumes
/// from a timer, never before the delay. Destroying the task while it sleeps
/// cancels the timer. Loop thread of the task only.
class SleepAwaiter {
 public:
  explicit SleepAwaiter(EventLoop::Clock::duration delay) : delay_(delay) {}
  SleepAwaiter(SleepAwaiter&& other) noexcept : delay_(other.delay_) {}  // only before it suspends
  SleepAwaiter& operator=(SleepAwaiter&&) = delete;
  ~SleepAwaiter();
  bool await_ready() const noexcept { return delay_ <= EventLoop::Clock::duration::zero(); }
  void await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}

 private:
  EventLoop::Clock::duration delay_;
  EventLoop* loop_ = nullptr;
  TimerId timer_ = 0;
};
/// Any duration; one longer than the loop's clock can count
/// (std::chrono::hours::max()) sleeps for ever, as EventLoop::run_after() does.
template <typename Rep, typename Period>
SleepAwaiter sleep_for(std::chrono::duration<Rep, Period> delay) {
  return SleepAwaiter(tcpkit::detail::saturating_duration_cast<EventLoop::Clock::duration>(delay));
}

/// Moves the awaiting task to `loop`'s thread: it goes on running there
/// from `loop`'s queue (at once when it is already there). This is the only
/// way a task changes threads. The task stays owned by the loop that it was
/// spawned on, so both loops must outlive it (hop back, or end the task,
/// before either goes away). A task that ends on another loop is freed by
/// the loop it was spawned on, from that loop's queue.
///
/// Destroying the task while its hop waits in `loop`'s queue (a timeout()
/// that expires, its own loop destroyed) cancels the hop: `loop` drops it
/// rather than resume a freed frame. Once `loop` runs the task, only that
/// thread may destroy it.
class ResumeOnAwaiter {
 public:
  explicit ResumeOnAwaiter(EventLoop* loop) : loop_(loop) {}
  ResumeOnAwaiter(ResumeOnAwaiter&& other) noexcept
      : loop_(other.loop_) {}  // only before it suspends
  ResumeOnAwaiter& operator=(ResumeOnAwaiter&&) = delete;
  ~ResumeOnAwaiter();
  bool await_ready() const noexcept { return loop_->is_in_loop_thread(); }
  void await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}

 private:
  EventLoop* loop_;
  /// Shared with the queued resume: kPending until one of them claims it,
  /// the resume (kResumed) or this awaiter's destruction (kCancelled).
  std::shared_ptr<std::atomic<int>> hop_;
};
inline ResumeOnAwaiter resume_on(EventLoop* loop) {
  return ResumeOnAwaiter(loop);
}

namespace detail {

/// The awaiter that `co_await a` uses: a's operator co_await(), or a itself.
template <typename A>
decltype(auto) get_awaiter(A&& a) {
  if constexpr (requires { std::forward<A>(a).operator co_await(); }) {
    return std::forward<A>(a).operator co_await();
  } else {
    return std::forward<A>(a);
  }
}
template <typename A>
using await_result_t = decltype(get_awaiter(std::declval<A>()).await_resume());

template <typename R>
struct is_result : std::false_type {};
template <typename T>
struct is_result<Result<T>> : std::true_type {};

/// The timer of a TimeoutAwaiter: on expiry it calls `expire` (which
/// destroys the child task) and resumes the awaiting task. Lives in the
/// awaiting task's frame, so it never moves once armed.
class Deadline {
 public:
  using Expire = void (*)(void* owner);
  Deadline() = default;
  Deadline(Deadline&&) noexcept {}  // only before arm()
  Deadline& operator=(Deadline&&) = delete;
  ~Deadline() { cancel(); }
  /// Loop thread: starts the timer on the current thread's loop.
  void arm(EventLoop::Clock::duration limit, std::coroutine_handle<> awaiting, Expire expire,
           void* owner);
  void cancel();
  bool expired() const { return expired_; }
  static Error timeout_error(EventLoop::Clock::duration limit);

 private:
  EventLoop* loop_ = nullptr;
  TimerId timer_ = 0;
  bool expired_ = false;
};

/// Runs a child task with a time limit; see timeout().
template <typename R>
class TimeoutAwaiter {
 public:
  TimeoutAwaiter(EventLoop::Clock::duration limit, Task<R> child)
      : limit_(limit), child_(std::move(child)) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> awaiting) {
    check_startable(child_.handle(), "timeout() of an empty coro::Task",
                    "timeout() of a finished coro::Task",
                    "timeout() of a coro::Task that a co_await runs");
    deadline_.arm(
        limit_, awaiting, [](void* self) { static_cast<TimeoutAwaiter*>(self)->child_.reset(); },
        this);
    return run_awaited(child_.handle(), child_.handle().promise(), awaiting);
  }
  R await_resume() {
    deadline_.cancel();
    if (deadline_.expired()) return Deadline::timeout_error(limit_);
    return std::move(*child_.handle().promise().value_);
  }

 private:
  EventLoop::Clock::duration limit_;
  Task<R> child_;
  Deadline deadline_;  // last: cancelled before the child goes
};

template <typename A>
Task<await_result_t<A>> as_task(A awaitable) {
  co_return co_await std::move(awaitable);
}

}  // namespace detail

/// Awaits `awaitable` (any of this layer's awaitables, or a Task, whose
/// result is a Result<T>) for at most `limit`: its result, or, once the
/// limit has passed, an Error with std::errc::timed_out. On expiry the
/// awaited operation is cancelled (its frame destroyed, so it unhooks from
/// its connection or timer) before the awaiting task resumes; bytes it had
/// not consumed stay in the stream for the next read. Loop thread of the
/// task; the timer runs on the current thread's loop.
/// A limit longer than the clock can count never expires.
/// The expiry destroys the awaited task from this loop's thread: a task
/// that hops to another loop with resume_on() may be waiting in that hop
/// when the limit passes (the hop is cancelled), but must not be running
/// on the other loop then; time such work out there, on its own loop.
template <typename Rep, typename Period, typename A>
auto timeout(std::chrono::duration<Rep, Period> limit, A awaitable) {
  using R = detail::await_result_t<A>;
  static_assert(detail::is_result<R>::value,
                "timeout() needs an awaitable whose result is a Result<T>");
  const auto clock_limit =
      tcpkit::detail::saturating_duration_cast<EventLoop::Clock::duration>(limit);
  if constexpr (std::is_same_v<A, Task<R>>) {
    return detail::TimeoutAwaiter<R>(clock_limit, std::move(awaitable));
  } else {
    return detail::TimeoutAwaiter<R>(clock_limit, detail::as_task(std::move(awaitable)));
  }
}

}  // namespace tcpkit::coro

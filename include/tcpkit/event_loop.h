/// \file
/// EventLoop: the reactor, one per thread (muduo's "one loop per thread").
///
/// The thread that creates a loop owns it and must call run(); every
/// object registered with the loop (connections, timers, acceptors) is then
/// used from that thread only. Other threads talk to a loop through
/// run_in_loop()/queue_in_loop() and quit(), which wake it through an eventfd.
/// Methods marked "any thread" are safe from anywhere; the rest assert they
/// run in the owning thread. A program that wants a loop on a thread of its
/// own uses EventLoopThread rather than writing that thread itself.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "tcpkit/detail/saturate.h"
#include "tcpkit/detail/task.h"
#include "tcpkit/io_backend.h"
#include "tcpkit/result.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class Buffer;
class Channel;
class Poller;
struct CreatedPoller;
class TcpConnection;
class TimerQueue;

/// Identifies a timer for cancel(); 0 is never a valid id.
using TimerId = uint64_t;

class EventLoop {
 public:
  using Functor = std::function<void()>;
  using Clock = std::chrono::steady_clock;

  /// A loop owned by the calling thread, waiting on `backend` (kDefault:
  /// the environment's TCPKIT_IO_BACKEND, else epoll). Where io_uring is
  /// unavailable or forbidden the loop runs on epoll instead: backend() and
  /// backend_fallback() tell. Fails, naming the call, when the kernel refuses
  /// its descriptors (epoll_create1, io_uring_setup or eventfd: EMFILE under
  /// a low RLIMIT_NOFILE).
  static Result<std::unique_ptr<EventLoop>> create(IoBackend backend = IoBackend::kDefault);
  /// The same, for code that cannot go on without a loop (a program's main
  /// loop, examples): where create() would fail, this prints the error to
  /// stderr and aborts. Library code and anything that can report an error
  /// uses create().
  explicit EventLoop(IoBackend backend = IoBackend::kDefault);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  /// Runs until quit(). Owner thread only.
  void run();
  /// Any thread. The loop finishes its current iteration, then run() returns.
  void quit();

  /// Any thread. Runs `f` now when called in the loop thread, otherwise queues it.
  /// Run at once, `f` is never wrapped in a Functor: a lambda that captures
  /// more than a Functor holds inline (a connection and two pointers, as a
  /// server's accept hands one over) costs no allocation.
  template <typename F>
  void run_in_loop(F&& f) {
    if (is_in_loop_thread()) {
      std::forward<F>(f)();
      return;
    }
    queue_in_loop(std::forward<F>(f));
  }
  /// Any thread. Always queues `f` (any callable: a lambda, a Functor, one
  /// that can only be moved) to run after the current I/O phase. What `f`
  /// captures stays in the queue's entry, with no allocation, up to
  /// detail::Task::kInline bytes (a connection's shared_ptr and a string).
  template <typename F>
  void queue_in_loop(F&& f) {
    queue_task(detail::Task(std::forward<F>(f)));
  }
  /// Any thread. Runs `f` in the loop thread and returns once it has run:
  /// inline when called in the loop thread, otherwise queued while the
  /// caller blocks. The loop must be running (or about to run): a loop that
  /// never runs again never answers.
  ///
  /// Deadlock rule: never call this from one loop's thread into another loop
  /// whose thread may, at the same time, wait on the first one (directly or
  /// through a chain). Each blocks its own loop while waiting for the other.
  /// Waiting from a loop into loops that never wait back (a server's base
  /// loop setting up its I/O loops) is fine.
  void run_in_loop_and_wait(const Functor& f);

  /// Timers; owner thread or any thread (forwarded). Ids are unique per loop.
  /// A timer fires no earlier than its deadline, and as soon after it as
  /// the loop wakes: a wait under 10 ms is as fine as a microsecond
  /// (epoll_pwait2 on Linux 5.11 or later, io_uring), a longer one may end
  /// up to a millisecond late. A delay at or below zero fires at the next
  /// turn of the loop; one longer than the clock can count
  /// (std::chrono::hours::max()) never fires, rather than wrapping into the
  /// past. run_every()'s interval must be above zero (a zero or negative
  /// one aborts, in every build).
  TimerId run_after(Clock::duration delay, Functor f);
  TimerId run_every(Clock::duration interval, Functor f);
  /// Any other duration saturates into the clock's (a plain conversion of
  /// milliseconds::max() to nanoseconds wraps below zero).
  template <typename Rep, typename Period>
  TimerId run_after(std::chrono::duration<Rep, Period> delay, Functor f) {
    return run_after(detail::saturating_duration_cast<Clock::duration>(delay), std::move(f));
  }
  template <typename Rep, typename Period>
  TimerId run_every(std::chrono::duration<Rep, Period> interval, Functor f) {
    return run_every(detail::saturating_duration_cast<Clock::duration>(interval), std::move(f));
  }
  /// In the loop's thread, a timer cancelled before it runs never runs.
  /// From another thread the cancel is queued, and timers that are due
  /// run before queued work: one due by the time the loop takes the
  /// cancel may run once (cancel from the loop's thread where that matters).
  void cancel(TimerId id);

  bool is_in_loop_thread() const { return thread_id_ == std::this_thread::get_id(); }
  void assert_in_loop_thread() const {
    if (!is_in_loop_thread()) abort_not_in_loop_thread();
  }
  bool is_running() const { return running_.load(std::memory_order_acquire); }

  /// Owner thread. Busy polling: after a wait that found I/O, and before it
  /// sleeps, the loop looks for events without sleeping for up to `spin`
  /// (or until its next timer is due), so that an event arriving meanwhile
  /// is handled without the wake-up a sleep costs (tens of microseconds on a
  /// virtual machine). A wake-up for a timer alone is followed by a sleep at
  /// once, so a loop without traffic sleeps. For a loop with a core of its
  /// own, such as a load generator's: the core stays busy while the loop
  /// spins. 0, the default, sleeps at once.
  void set_busy_poll(std::chrono::microseconds spin) { busy_poll_ = spin; }
  std::chrono::microseconds busy_poll() const { return busy_poll_; }
  /// Owner thread, or any thread after run() has returned: how long the loop
  /// has spun without finding an event (part of its CPU time that did no
  /// work), 0 without busy polling.
  Clock::duration busy_poll_idle() const { return busy_poll_idle_; }

  /// The time the current iteration woke up: cheap "now" for callbacks.
  Clock::time_point now() const { return now_; }
  /// The backend this loop waits on: kEpoll or kUring, never kDefault.
  IoBackend backend() const { return backend_; }
  /// Why the loop runs on epoll though io_uring was asked for, e.g.
  /// "io_uring_setup for an event loop: Operation not permitted"; an empty
  /// code() when it runs what was asked for. A program logs it once.
  const Error& backend_fallback() const { return backend_fallback_; }
  /// Registered channels and pending timers; a finished test expects 0 of each.
  size_t channel_count() const;
  size_t timer_count() const;
  /// The loop of the calling thread, or nullptr.
  static EventLoop* current();

  /// State that a layer above the reactor keeps per loop (the coroutine
  /// layer keeps the tasks the loop owns here). The loop destroys its
  /// extensions first thing in its destructor, newest first, while timers
  /// and queued functors still work: what they own can unhook itself.
  class Extension {
   public:
    virtual ~Extension() = default;
  };
  /// Owner thread. The extension stored under `key` (any unique address), or null.
  Extension* extension(const void* key) const;
  /// Owner thread. Stores `ext` under `key`; `key` must not be in use.
  Extension& add_extension(const void* key, std::unique_ptr<Extension> ext);

 private:
  // The loop's internals for the two classes built into it; friends rather
  // than public methods, so that they are no part of the API.
  friend class Channel;
  friend class TcpConnection;

  /// For TcpConnection: one read buffer shared by every connection of this
  /// loop. A connection reads into it, hands it to on_message, and keeps only
  /// the unconsumed tail, so an idle connection holds no buffer.
  Buffer& shared_read_buffer() { return *shared_read_buffer_; }
  /// For TcpConnection: the bytes of a kData event (channel.h), which the
  /// io_uring backend read for it.
  std::string_view received(unsigned buffer) const;
  /// For TcpConnection: hands `len` bytes to the backend, to be sent with
  /// the loop's next wait (kSent events); how many it took, all or none, 0
  /// where it does not send (epoll).
  size_t send_for(Channel* channel, const char* data, size_t len);
  /// For TcpConnection: what it handed over and the backend has not begun
  /// to send, given back for it to send first (Poller::take_back()).
  std::string_view take_back_for(Channel* channel);
  /// For Channel: registers, changes or removes its interest with the poller.
  void update_channel(Channel* channel);
  void remove_channel(Channel* channel);
  /// For Channel: whether the backend reads for it (Channel::receives())
  /// changed; only a backend that receives does anything about it.
  void channel_receives_changed(Channel* channel);

  explicit EventLoop(CreatedPoller created);
  EventLoop(std::unique_ptr<Poller> poller, Error fallback, UniqueFd wakeup_fd);
  [[noreturn]] void abort_not_in_loop_thread() const;
  TimerId add_timer(Clock::duration delay, Clock::duration interval, Functor f);
  void queue_task(detail::Task task);
  void wake_up();
  void drain_wakeup_fd(unsigned mask);
  void wait_for_events(std::chrono::microseconds timeout);
  void dispatch_io();
  void run_due_timers();
  void run_pending_functors();
  bool has_pending_functors();

  const std::thread::id thread_id_;
  std::atomic<bool> quit_{false};
  std::atomic<bool> running_{false};
  Clock::time_point now_;
  std::chrono::microseconds busy_poll_{0};
  Clock::duration busy_poll_idle_{0};
  bool found_io_ = false;  ///< the last wait found I/O: the next one may spin
  std::unique_ptr<Poller> poller_;
  IoBackend backend_;
  Error backend_fallback_;
  std::unique_ptr<TimerQueue> timers_;
  std::unique_ptr<Buffer> shared_read_buffer_;
  std::atomic<TimerId> next_timer_id_{1};
  UniqueFd wakeup_fd_;
  std::unique_ptr<Channel> wakeup_channel_;
  /// This iteration's events; entries from undelivered_ on are still to be
  /// dispatched, and the list is empty outside dispatch_io().
  std::vector<std::pair<Channel*, unsigned>> ready_;
  size_t undelivered_ = 0;
  std::vector<std::pair<const void*, std::unique_ptr<Extension>>> extensions_;

  std::mutex mutex_;
  std::vector<detail::Task> pending_;        ///< guarded by mutex_
  std::vector<detail::Task> running_batch_;  ///< what run_pending_functors() runs; loop thread only
  std::atomic<bool> has_pending_{false};     ///< pending_ is not empty; written under mutex_
  std::atomic<bool> running_functors_{false};
};

}  // namespace tcpkit

#include "tcpkit/event_loop.h"

#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <condition_variable>
#include <sstream>

#include "fatal.h"
#include "poller.h"
#include "sys.h"
#include "tcpkit/buffer.h"
#include "tcpkit/detail/channel.h"
#include "timer_queue.h"

namespace tcpkit {
namespace {
thread_local EventLoop* t_loop_in_this_thread = nullptr;

// For the plain constructor, which has no way to return an error.
template <typename T>
T value_or_die(Result<T> r) {
  if (!r) detail::fatal("cannot create an event loop: %s", r.error().message().c_str());
  return std::move(r).value();
}

}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::create(IoBackend backend) {
  auto poller = Poller::create(resolve_io_backend(backend));
  if (!poller) return poller.error();
  auto wakeup_fd = sys::wakeup_eventfd();
  if (!wakeup_fd) return wakeup_fd.error();
  // The constructor is private; make_unique cannot reach it.
  return std::unique_ptr<EventLoop>(
      new EventLoop(std::move(poller->poller), std::move(poller->fallback), std::move(*wakeup_fd)));
}

// Delegates through a Created value: the poller is created first, so a
// failure names the same call as create()'s.
EventLoop::EventLoop(IoBackend backend)
    : EventLoop(value_or_die(Poller::create(resolve_io_backend(backend)))) {}

EventLoop::EventLoop(CreatedPoller created)
    : EventLoop{std::move(created.poller), std::move(created.fallback),
                value_or_die(sys::wakeup_eventfd())} {}

EventLoop::EventLoop(std::unique_ptr<Poller> poller, Error fallback, UniqueFd wakeup_fd)
    : thread_id_(std::this_thread::get_id()),
      now_(Clock::now()),
      poller_(std::move(poller)),
      backend_(poller_->backend()),
      backend_fallback_(std::move(fallback)),
      timers_(std::make_unique<TimerQueue>()),
      shared_read_buffer_(std::make_unique<Buffer>()),
      wakeup_fd_(std::move(wakeup_fd)) {
  if (t_loop_in_this_thread != nullptr)
    detail::fatal("a second EventLoop was created in one thread");
  t_loop_in_this_thread = this;
  wakeup_channel_ = std::make_unique<Channel>(this, wakeup_fd_.get());
  wakeup_channel_->set_handler<&EventLoop::drain_wakeup_fd>(this);
  wakeup_channel_->enable_reading();
}

EventLoop::~EventLoop() {
  // Extensions may cancel timers and queue functors as they go: they go first.
  while (!extensions_.empty()) {
    auto last = std::move(extensions_.back().second);
    extensions_.pop_back();
    last.reset();
  }
  wakeup_channel_->remove();
  t_loop_in_this_thread = nullptr;
}

EventLoop* EventLoop::current() {
  return t_loop_in_this_thread;
}

EventLoop::Extension* EventLoop::extension(const void* key) const {
  assert_in_loop_thread();
  for (const auto& [k, ext] : extensions_) {
    if (k == key) return ext.get();
  }
  return nullptr;
}

EventLoop::Extension& EventLoop::add_extension(const void* key, std::unique_ptr<Extension> ext) {
  assert_in_loop_thread();
  assert(extension(key) == nullptr && "add_extension() twice with one key");
  extensions_.emplace_back(key, std::move(ext));
  return *extensions_.back().second;
}

void EventLoop::abort_not_in_loop_thread() const {
  std::ostringstream os;
  os << "EventLoop used from thread " << std::this_thread::get_id() << " but owned by thread "
     << thread_id_;
  detail::fatal("%s", os.str().c_str());
}

// The loop body, phase by phase:
//   1. sleep in epoll_wait or io_uring_enter until I/O, a wake-up, or the earliest timer;
//   2. dispatch I/O events to their channels;
//   3. run the timers that are due;
//   4. run functors queued from other threads (or from callbacks).
void EventLoop::run() {
  assert_in_loop_thread();
  running_.store(true, std::memory_order_release);
  while (!quit_.load(std::memory_order_acquire)) {
    // No clock read for the wait when no timer is set.
    const auto wait = timers_->size() == 0 ? std::chrono::microseconds(-1)
                                           : timers_->time_until_next(Clock::now());
    wait_for_events(wait);
    now_ = Clock::now();
    dispatch_io();
    run_due_timers();
    run_pending_functors();
  }
  // Work queued during the last iteration still runs, and so does the work
  // it queues (a close queues the connection's destruction): a quit() never
  // drops a queued close or send. Bounded, in case functors requeue forever.
  // Taking mutex_ here also waits for a quit() from another thread to finish
  // its wake_up() (see quit()).
  for (int round = 0; round < 16 && has_pending_functors(); ++round) run_pending_functors();
  quit_.store(false, std::memory_order_release);
  running_.store(false, std::memory_order_release);
}

// Phase 1. With busy polling, after a wait that found I/O, polls that do
// not sleep come first, until one finds an event, the spin is over or the
// next timer is due (which then runs on time); the time spent in the empty
// ones is counted as idle. The sleep that follows is shortened by the spin.
// A wait that found no I/O (a timer's wake-up alone: an idle server's
// periodic work) is followed by a sleep at once, so an idle loop sleeps.
void EventLoop::wait_for_events(std::chrono::microseconds timeout) {
  if (busy_poll_.count() == 0 || timeout.count() == 0 || !found_io_) {
    poller_->poll(timeout, &ready_);
    found_io_ = !ready_.empty();
    return;
  }
  const auto start = Clock::now();
  const auto until = start + (timeout.count() > 0 ? std::min(busy_poll_, timeout) : busy_poll_);
  auto now = start;
  do {
    poller_->poll(std::chrono::microseconds(0), &ready_);
    now = Clock::now();
  } while (ready_.empty() && now < until);
  busy_poll_idle_ += now - start;
  if (ready_.empty() && timeout.count() > 0) {
    timeout =
        std::max(std::chrono::microseconds(0),
                 timeout - std::chrono::duration_cast<std::chrono::microseconds>(now - start));
  }
  if (ready_.empty()) poller_->poll(timeout, &ready_);
  found_io_ = !ready_.empty();
}

// A channel lives inside its owner (a connection holds its own), so the
// lines around it hold the owner's hot fields: with a thousand connections
// each event finds them out of the cache, and the loads of the next events
// can overlap with this one's work if they are asked for early. A prefetch
// never faults, whatever the lines belong to.
// (bench/cpu-per-cell 1000 16 --rate 40000, epoll: 1.16x -> 1.05x the bare
// epoll server's CPU per message.)
namespace {
constexpr size_t kPrefetchAhead = 2;

void prefetch_around(const Channel* channel) {
  const char* at = reinterpret_cast<const char*>(channel);
  constexpr ptrdiff_t kLine = 64;
  for (ptrdiff_t line = -1; line < 4; ++line) __builtin_prefetch(at + line * kLine);
}
}  // namespace

void EventLoop::dispatch_io() {
  const size_t count = ready_.size();
  for (size_t i = 0; i < count; ++i) {
    if (i + kPrefetchAhead < count && ready_[i + kPrefetchAhead].first != nullptr) {
      prefetch_around(ready_[i + kPrefetchAhead].first);
    }
    auto [channel, mask] = ready_[i];
    undelivered_ = i + 1;
    if (channel != nullptr) channel->handle_event(mask);  // null: removed meanwhile
    // The bytes were copied or dropped: their buffer goes back to the kernel.
    if (mask & event::kData) poller_->release(event::detail(mask));
  }
  // Delivered: a channel removed from now on (a timer closing every
  // connection) has no event left here to take back.
  ready_.clear();
  undelivered_ = 0;
}

void EventLoop::run_due_timers() {
  timers_->run_due(now_);
}

void EventLoop::run_pending_functors() {
  // Most iterations have nothing queued: they take no lock. A functor queued
  // while this reads false comes with a wake-up (queue_in_loop), or was
  // queued by this thread after this point, and runs in the next iteration.
  if (!has_pending_.load(std::memory_order_acquire)) return;
  // The two vectors trade places and keep their storage: a loop that queues
  // work every iteration (a close queues its connection's destruction)
  // allocates nothing for the queue once both have grown.
  {
    std::lock_guard lock(mutex_);
    running_batch_.swap(pending_);
    has_pending_.store(false, std::memory_order_relaxed);
  }
  running_functors_.store(true, std::memory_order_release);
  for (auto& f : running_batch_) f();
  running_batch_.clear();
  running_functors_.store(false, std::memory_order_release);
}

bool EventLoop::has_pending_functors() {
  std::lock_guard lock(mutex_);
  return !pending_.empty();
}

void EventLoop::quit() {
  if (is_in_loop_thread()) {
    quit_.store(true, std::memory_order_release);
    return;
  }
  // The owner may destroy the loop as soon as run() returns, and run() may
  // see the flag before we wake it (it was awake anyway). Setting the flag
  // and waking up under mutex_ keeps run() from returning in between: after
  // its last iteration it takes the same lock. Otherwise wake_up() could
  // write to the closed, or already reused, eventfd of a destroyed loop.
  std::lock_guard lock(mutex_);
  quit_.store(true, std::memory_order_release);
  wake_up();
}

void EventLoop::run_in_loop_and_wait(const Functor& f) {
  if (is_in_loop_thread()) {
    f();
    return;
  }
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  queue_in_loop([&] {
    f();
    // Notified under the lock: once the waiter sees `done` it returns and
    // destroys `cv`, which must not happen while notify_one() still runs.
    std::lock_guard lock(mutex);
    done = true;
    cv.notify_one();
  });
  std::unique_lock lock(mutex);
  cv.wait(lock, [&] { return done; });
}

void EventLoop::queue_task(detail::Task task) {
  // The wake-up is written under mutex_ too, as in quit(): the loop can take
  // `task` only after the lock is released, and `task` may end the loop (its
  // owner then destroys it and closes the eventfd). A write after the unlock
  // could go to a closed, or already reused, descriptor.
  std::lock_guard lock(mutex_);
  pending_.push_back(std::move(task));
  has_pending_.store(true, std::memory_order_release);
  // From the loop thread a wake-up is only needed while functors run, or
  // before run(), which sleeps first: the new one would otherwise wait for
  // the next I/O event.
  if (!is_in_loop_thread() || running_functors_.load(std::memory_order_acquire) ||
      !running_.load(std::memory_order_acquire)) {
    wake_up();
  }
}

TimerId EventLoop::add_timer(Clock::duration delay, Clock::duration interval, Functor f) {
  TimerId id = next_timer_id_.fetch_add(1, std::memory_order_relaxed);
  auto add = [this, id, delay, interval, f = std::move(f)]() mutable {
    timers_->add(id, detail::saturating_deadline(Clock::now(), delay), interval, std::move(f));
  };
  run_in_loop(std::move(add));
  return id;
}

TimerId EventLoop::run_after(Clock::duration delay, Functor f) {
  return add_timer(delay, Clock::duration::zero(), std::move(f));
}

// Checked in every build: a repeating timer of no interval would run on
// every turn of the loop.
TimerId EventLoop::run_every(Clock::duration interval, Functor f) {
  if (interval <= Clock::duration::zero())
    detail::fatal("EventLoop::run_every() needs an interval above zero");
  return add_timer(interval, interval, std::move(f));
}

void EventLoop::cancel(TimerId id) {
  auto cancel_queued = [this, id] { timers_->cancel(id); };
  if (!is_in_loop_thread()) {
    queue_in_loop(cancel_queued);
    return;
  }
  if (timers_->cancel(id)) return;
  // Not queued: it ran already, or it is another thread's run_after() whose
  // adding functor still waits in the queue. That functor was queued before
  // the id was handed out, so a second try queued now comes after it.
  queue_in_loop(cancel_queued);
}

size_t EventLoop::channel_count() const {
  assert_in_loop_thread();
  return poller_->channel_count() - 1;  // the wake-up channel is the loop's own
}

size_t EventLoop::timer_count() const {
  assert_in_loop_thread();
  return timers_->size();
}

void EventLoop::update_channel(Channel* channel) {
  assert_in_loop_thread();
  poller_->update(channel);
}

void EventLoop::channel_receives_changed(Channel* channel) {
  assert_in_loop_thread();
  poller_->receives_changed(channel);
}

void EventLoop::remove_channel(Channel* channel) {
  assert_in_loop_thread();
  poller_->remove(channel);
  // A handler may remove, and then destroy, a channel whose event waits
  // further down this iteration's ready list (a server stopped from a
  // callback destroys its listener): that event must not be delivered.
  // Only the events not yet delivered are looked at, so a thousand
  // connections closed together outside dispatch_io() cost no scan at all
  // (that scan was 12,000 instructions per connection closed by `tcpkit
  // bench -c 1000` at its end, under callgrind).
  for (size_t i = undelivered_; i < ready_.size(); ++i) {
    if (ready_[i].first == channel) ready_[i].first = nullptr;
  }
}

std::string_view EventLoop::received(unsigned buffer) const {
  return poller_->received(buffer);
}

size_t EventLoop::send_for(Channel* channel, const char* data, size_t len) {
  return poller_->send(channel, data, len);
}

std::string_view EventLoop::take_back_for(Channel* channel) {
  return poller_->take_back(channel);
}

void EventLoop::wake_up() {
  uint64_t one = 1;
  // A full counter (EAGAIN) already means "wake up"; nothing else can fail.
  [[maybe_unused]] ssize_t n = ::write(wakeup_fd_.get(), &one, sizeof one);
}

void EventLoop::drain_wakeup_fd(unsigned /*mask*/) {
  uint64_t value = 0;
  [[maybe_unused]] ssize_t n = sys::read(wakeup_fd_.get(), &value, sizeof value);
}

}  // namespace tcpkit

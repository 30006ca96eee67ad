#include "poller_uring.h"

#include <poll.h>

#include <cerrno>

#include "channel.h"

namespace tcpkit {
namespace {

// A submission queue of 256 entries covers the re-arms of a busy iteration;
// a larger batch is handed over early (next_sqe()). Completions beyond the
// 1024-entry queue wait in the kernel (IORING_FEAT_NODROP) until the next
// wait makes room. Both rings are one mapping each, per loop, not per
// connection.
constexpr unsigned kSqEntries = 256;
constexpr unsigned kCqEntries = 1024;
constexpr uint64_t kNoAnswer = 0;  // user_data of requests whose completion is ignored
// A cancellation's user_data: this bit and the user_data of the poll it
// cancels (generations stay below 2^31, so the bit is free).
constexpr uint64_t kCancelBit = uint64_t{1} << 63;

unsigned to_poll(unsigned interest) {
  unsigned ev = 0;
  if (interest & event::kReadable) ev |= POLLIN | POLLPRI | POLLRDHUP;
  if (interest & event::kWritable) ev |= POLLOUT;
  return ev;
}

// The same bits as epoll's (poller_epoll.cpp): a poll request reports
// POLLERR and POLLHUP whether asked for or not, and a peer's FIN is
// POLLIN|POLLRDHUP. A negative result is the request's own failure (EBADF
// for a descriptor closed before its channel was removed, a bug in the
// owner): reported as an error, which makes the owner look and close.
unsigned from_poll(int res) {
  if (res < 0) return event::kError;
  unsigned ev = static_cast<unsigned>(res);
  unsigned mask = 0;
  if (ev & (POLLIN | POLLPRI | POLLRDHUP)) mask |= event::kReadable;
  if (ev & POLLOUT) mask |= event::kWritable;
  if (ev & POLLHUP) mask |= event::kHangup;
  if (ev & POLLERR) mask |= event::kError;
  return mask;
}

}  // namespace

Result<std::unique_ptr<Poller>> UringPoller::create() {
  auto poller = std::make_unique<UringPoller>();
  // Only the loop's thread submits, and it collects completions only when it
  // waits: the kernel may then run completion work in that wait (6.1's
  // DEFER_TASKRUN) instead of interrupting the thread for each one. Older
  // kernels refuse the flags (EINVAL) and get a plain ring.
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  params.cq_entries = kCqEntries;
  // The ring's descriptor is always close-on-exec (the kernel sets it).
  int r = io_uring_queue_init_params(kSqEntries, &poller->ring_, &params);
  if (r == -EINVAL) {
    params = io_uring_params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = kCqEntries;
    r = io_uring_queue_init_params(kSqEntries, &poller->ring_, &params);
  }
  if (r < 0) return Error::from_errno(-r, "io_uring_setup for an event loop");
  poller->initialized_ = true;
  // Without NODROP a burst beyond the completion queue loses events; without
  // EXT_ARG every timed wait costs a timeout request. Neither is worth a
  // second code path for kernels older than 5.11: they get epoll.
  if (!(params.features & IORING_FEAT_NODROP) || !(params.features & IORING_FEAT_EXT_ARG)) {
    return Error::from_errno(ENOSYS, "io_uring for an event loop (needs Linux 5.11)");
  }
  return std::unique_ptr<Poller>(std::move(poller));
}

UringPoller::~UringPoller() {
  // Cancels whatever polls are still armed (channels of a loop destroyed
  // with them, which the tests would report) and unmaps the rings.
  if (initialized_) io_uring_queue_exit(&ring_);
}

uint64_t UringPoller::user_data(uint32_t index) const {
  return (uint64_t{slots_[index].generation} << 32) | index;
}

void UringPoller::poll(std::chrono::milliseconds timeout, Ready* ready) {
  ready->clear();
  arm_queued();
  // A write recheck is due this iteration: collect what is there, no waiting.
  if (!recheck_.empty()) timeout = std::chrono::milliseconds(0);
  __kernel_timespec ts{};
  __kernel_timespec* wait_limit = nullptr;
  if (timeout.count() >= 0) {
    ts.tv_sec = timeout.count() / 1000;
    ts.tv_nsec = (timeout.count() % 1000) * 1'000'000;
    wait_limit = &ts;
  }
  // One io_uring_enter(): submits this iteration's requests and waits for a
  // completion or the timeout (IORING_ENTER_EXT_ARG carries it, no timeout
  // request needed).
  io_uring_cqe* first = nullptr;
  int r = io_uring_submit_and_wait_timeout(&ring_, &first, 1, wait_limit, nullptr);
  // ETIME: the timer is due. EINTR: a signal. EBUSY, EAGAIN: completions are
  // waiting in the kernel's overflow list; reaping below makes room.
  if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) die("io_uring_enter", -r);
  unsigned head = 0;
  unsigned seen = 0;
  io_uring_cqe* cqe = nullptr;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    complete(*cqe, ready);
    ++seen;
  }
  io_uring_cq_advance(&ring_, seen);
  // Once armed, a write that finds no room is sure to hear of the next: so
  // the channel tries now, and EAGAIN is the worst it meets.
  for (auto [index, generation] : recheck_) {
    const Slot& slot = slots_[index];
    if (slot.channel == nullptr || slot.generation != generation) continue;
    if (slot.channel->interest() & event::kWritable)
      ready->emplace_back(slot.channel, event::kWritable);
  }
  recheck_.clear();
}

// The one place where a completion becomes a channel's event.
void UringPoller::complete(const io_uring_cqe& cqe, Ready* ready) {
  if (cqe.user_data == kNoAnswer) return;
  if (cqe.user_data & kCancelBit) {
    // A multishot poll whose wake-up is still being handled in the kernel
    // (its task work waits for our next wait, with DEFER_TASKRUN) refuses
    // to be cancelled now, and stays armed: it would keep its socket open
    // after our close(). So it is cancelled again, with the next batch.
    if (cqe.res == -EALREADY) stale_.push_back(cqe.user_data & ~kCancelBit);
    return;
  }
  const auto index = static_cast<uint32_t>(cqe.user_data);
  const auto generation = static_cast<uint32_t>(cqe.user_data >> 32);
  if (index >= slots_.size()) return;
  Slot& slot = slots_[index];
  if (slot.generation != generation || slot.channel == nullptr) {
    // Cancelled or removed. A multishot poll that still says "more" escaped
    // its cancellation: cancel it again.
    if (cqe.flags & IORING_CQE_F_MORE) stale_.push_back(cqe.user_data);
    return;
  }
  const unsigned armed = slot.interest;
  // A one-shot poll is spent once it completes; a multishot one while the
  // kernel says it posts no more (no IORING_CQE_F_MORE).
  const bool spent = !(cqe.flags & IORING_CQE_F_MORE);
  if (spent) {
    slot.armed = false;
    queue_arm(index);  // with the channel's interest as it stands after the handler ran
  }
  // Only what the channel asked for, as epoll reports it: the kernel's
  // forced POLLRDHUP is no news to a channel that does not read.
  const unsigned mask = from_poll(cqe.res) & (armed | event::kHangup | event::kError);
  if (mask != 0) {
    ready->emplace_back(slot.channel, mask);
  } else if (!(armed & event::kReadable)) {
    slot.peer_closed = true;  // re-armed as a multishot poll (the header says why)
  }
}

void UringPoller::update(Channel* channel) {
  if (!channel->registered()) {
    if (channel->interest() == 0) return;
    uint32_t index = 0;
    if (free_slots_.empty()) {
      index = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
    } else {
      index = free_slots_.back();
      free_slots_.pop_back();
    }
    slots_[index].channel = channel;
    slots_[index].peer_closed = false;
    channel->set_slot(index);
    channel->set_registered(true);
    ++count_;
    queue_arm(index);
    return;
  }
  const uint32_t index = channel->slot();
  // An armed poll with another interest is cancelled and armed anew: the
  // new one checks readiness when armed, so nothing is missed in between.
  Slot& slot = slots_[index];
  if (slot.armed && slot.interest == channel->interest()) return;
  if (slot.armed) cancel(index);
  queue_arm(index);
}

void UringPoller::remove(Channel* channel) {
  if (!channel->registered()) return;
  const uint32_t index = channel->slot();
  Slot& slot = slots_[index];
  if (slot.armed) {
    cancel(index);
  } else {
    next_generation(&slot);
  }
  slot.channel = nullptr;
  free_slots_.push_back(index);
  channel->set_registered(false);
  --count_;
  // A poll request holds a reference to the socket: until its cancellation
  // reaches the kernel, the owner's close() neither sends a FIN nor frees
  // the port (a server restarted on it would meet EADDRINUSE). So queued
  // cancellations go now, not with the next wait. A channel removed by its
  // own handler (the usual close, on EOF) has no armed poll: no call.
  if (io_uring_sq_ready(&ring_) > 0) submit();
}

void UringPoller::queue_arm(uint32_t index) {
  Slot& slot = slots_[index];
  if (slot.queued) return;
  slot.queued = true;
  to_arm_.push_back(index);
}

// A slot queued, then freed and reused before this runs, arms for its new
// channel: what matters is the slot's state now.
void UringPoller::arm_queued() {
  for (uint64_t poll : stale_) {
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_poll_remove(sqe, poll);
    io_uring_sqe_set_data64(sqe, kCancelBit | poll);
  }
  stale_.clear();
  for (uint32_t index : to_arm_) {
    Slot& slot = slots_[index];
    slot.queued = false;
    if (slot.channel == nullptr || slot.armed) continue;
    const unsigned interest = slot.channel->interest();
    io_uring_sqe* sqe = next_sqe();
    slot.multishot = slot.peer_closed && !(interest & event::kReadable);
    if (slot.multishot) {
      io_uring_prep_poll_multishot(sqe, slot.channel->fd(), to_poll(interest));
      if (interest & event::kWritable) recheck_.emplace_back(index, slot.generation);
    } else {
      io_uring_prep_poll_add(sqe, slot.channel->fd(), to_poll(interest));
    }
    io_uring_sqe_set_data64(sqe, user_data(index));
    slot.interest = static_cast<unsigned char>(interest);
    slot.armed = true;
  }
  to_arm_.clear();
}

void UringPoller::cancel(uint32_t index) {
  Slot& slot = slots_[index];
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_poll_remove(sqe, user_data(index));
  io_uring_sqe_set_data64(sqe, kCancelBit | user_data(index));
  slot.armed = false;
  // The cancelled poll's completion (ECANCELED, or an event that raced the
  // cancellation) carries the old generation and is dropped.
  next_generation(&slot);
}

void UringPoller::next_generation(Slot* slot) {
  // Never 0 (user_data 0 is kNoAnswer), never 2^31 or more (kCancelBit).
  if (++slot->generation >= (uint32_t{1} << 31)) slot->generation = 1;
}

io_uring_sqe* UringPoller::next_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe != nullptr) return sqe;
  submit();  // the queue is full: hand this batch over now
  sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) die("io_uring_get_sqe", EBUSY);
  return sqe;
}

void UringPoller::submit() {
  // With GETEVENTS: under DEFER_TASKRUN a cancelled poll lets go of its
  // socket only when the completion work runs, which is in an enter that
  // collects events.
  int r = io_uring_submit_and_get_events(&ring_);
  if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN) die("io_uring_submit", -r);
}

}  // namespace tcpkit

#include "poller_uring.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "tcpkit/detail/channel.h"

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
// A multishot receive's user_data: this bit, the receive's sequence number
// (below 2^30) and the slot; a poll's generation stays below 2^30 too.
constexpr uint64_t kRecvBit = uint64_t{1} << 62;
constexpr uint32_t kSequenceLimit = uint32_t{1} << 30;
// The provided buffers of one loop: 128 of 16 KiB (2 MiB of address space,
// touched only as far as the bytes received reach). A multishot receive may
// fill buffers past the moment its connection pauses, and those bytes are
// held: the ring bounds that read-ahead per loop, so it is kept small (with
// 256, a server with never-reading clients grew 4-8 MiB more than on epoll).
constexpr unsigned kBuffers = 128;  // a power of two, as the ring needs
constexpr unsigned kBufferSize = event::kBulkRead;
constexpr uint16_t kBufferGroup = 0;
// A send's user_data: this bit and the send buffer's number. A buffer is
// reused only after its request's last completion, so no sequence is needed.
constexpr uint64_t kSendBit = uint64_t{1} << 61;
// 256 send buffers of 16 KiB (4 MiB of address space per loop, touched only
// as far as the writes of one iteration reach: the most recently freed
// buffer is reused first). An iteration with more small writes than that
// sends the rest with send(), as on epoll.
constexpr unsigned kSends = 256;
constexpr uint16_t kNoSend = 0xFFFF;
constexpr uint32_t kNoOwner = UINT32_MAX;

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

constexpr std::align_val_t kPage{4096};

char* page_aligned(size_t bytes) {
  return static_cast<char*>(::operator new[](bytes, kPage));
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
  const char* receive = std::getenv("TCPKIT_URING_RECEIVE");
  const bool wanted = receive == nullptr || std::strcmp(receive, "0") != 0;
  if (wanted && (params.flags & IORING_SETUP_DEFER_TASKRUN)) poller->set_up_buffers();
  // Small writes go through the ring after a wait that found the loop with
  // time to spare, and by send() while work keeps arriving (poller_uring.h).
  // TCPKIT_URING_SEND=1: through the ring always; =0: by send() always.
  const char* send = std::getenv("TCPKIT_URING_SEND");
  const bool never = send != nullptr && std::strcmp(send, "0") == 0;
  const bool always = send != nullptr && std::strcmp(send, "1") == 0;
  const bool when_idle = !never && !always;
  if (!never && (params.flags & IORING_SETUP_DEFER_TASKRUN)) {
    poller->set_up_sends();
    poller->sends_follow_load_ = when_idle;
    poller->ring_sends_now_ = always;
  }
  return std::unique_ptr<Poller>(std::move(poller));
}

UringPoller::~UringPoller() {
  // Cancels whatever polls are still armed (channels of a loop destroyed
  // with them, which the tests would report) and unmaps the rings; then the
  // buffer ring, which the kernel no longer uses.
  if (initialized_) io_uring_queue_exit(&ring_);
  if (buffer_ring_ != nullptr) ::munmap(buffer_ring_, buffer_ring_bytes_);
}

void UringPoller::PageFree::operator()(char* p) const noexcept {
  ::operator delete[](p, kPage);
}

// Registers the provided-buffer ring; without it (a kernel before 5.19,
// ENOMEM) channels read after readable polls, as on epoll.
bool UringPoller::set_up_buffers() {
  buffer_ring_bytes_ = kBuffers * sizeof(io_uring_buf);
  void* mem = ::mmap(nullptr, buffer_ring_bytes_, PROT_READ | PROT_WRITE,
                     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) return false;
  buffer_ring_ = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uintptr_t>(mem);
  reg.ring_entries = kBuffers;
  reg.bgid = kBufferGroup;
  if (io_uring_register_buf_ring(&ring_, &reg, 0) != 0) {
    ::munmap(buffer_ring_, buffer_ring_bytes_);
    buffer_ring_ = nullptr;
    return false;
  }
  // Not value-initialized: pages the kernel never writes to stay unmapped.
  buffers_.reset(page_aligned(size_t{kBuffers} * kBufferSize));
  lengths_.assign(kBuffers, 0);
  io_uring_buf_ring_init(buffer_ring_);
  for (unsigned id = 0; id < kBuffers; ++id) release(id);
  io_uring_buf_ring_advance(buffer_ring_, static_cast<int>(released_));
  released_ = 0;
  receive_ = true;
  return true;
}

// Under DEFER_TASKRUN, as receiving: a cancelled send's completion then
// comes only inside our own io_uring_enter().
void UringPoller::set_up_sends() {
  // Not value-initialized: pages never written stay unmapped.
  send_memory_.reset(page_aligned(size_t{kSends} * event::kSendMax));
  sends_.assign(kSends, Send{});
  free_sends_.clear();
  for (unsigned id = kSends; id-- > 0;) free_sends_.push_back(static_cast<uint16_t>(id));
}

char* UringPoller::send_buffer(unsigned id) const {
  return send_memory_.get() + size_t{id} * event::kSendMax;
}

size_t UringPoller::send(Channel* channel, const char* data, size_t len) {
  if (!send_memory_ || !channel->registered() || len == 0) return 0;
  Slot& slot = slots_[channel->slot()];
  uint16_t id = slot.send;
  if (id == kNoSend) {
    if (!ring_sends_now_ || free_sends_.empty() || len > event::kSendMax) return 0;
    id = free_sends_.back();
    free_sends_.pop_back();
    sends_[id] = Send{channel->slot(), 0, 0, false};
    slot.send = id;
    to_send_.push_back(id);
  } else if (sends_[id].submitted || len > event::kSendMax - sends_[id].length) {
    return 0;
  }
  Send& request = sends_[id];
  std::memcpy(send_buffer(id) + request.length, data, len);
  request.length += static_cast<uint32_t>(len);
  return len;
}

// The buffer goes back to the free list with its bytes, which stay there
// until the next send() takes a buffer: the caller sends them before that.
std::string_view UringPoller::take_back(Channel* channel) {
  if (!send_memory_ || !channel->registered()) return {};
  const uint16_t id = slots_[channel->slot()].send;
  if (id == kNoSend || sends_[id].submitted) return {};
  const Send& request = sends_[id];
  const std::string_view held(send_buffer(id) + request.sent, request.length - request.sent);
  free_send(id);  // poll() skips its entry in to_send_: it has no owner
  return held;
}

void UringPoller::submit_send(uint16_t id) {
  Send& request = sends_[id];
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_send(sqe, slots_[request.owner].channel->fd(), send_buffer(id) + request.sent,
                     request.length - request.sent, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, kSendBit | id);
  request.submitted = true;
}

void UringPoller::free_send(uint16_t id) {
  if (sends_[id].owner != kNoOwner) slots_[sends_[id].owner].send = kNoSend;
  sends_[id].owner = kNoOwner;
  free_sends_.push_back(id);
}

// What the socket took (the rest goes again with the next wait), or the
// send's failure.
void UringPoller::complete_send(const io_uring_cqe& cqe, Ready* ready) {
  const auto id = static_cast<uint16_t>(cqe.user_data);
  if (id >= sends_.size()) return;
  Send& request = sends_[id];
  if (request.owner == kNoOwner) {  // its channel is gone
    free_send(id);
    return;
  }
  Channel* channel = slots_[request.owner].channel;
  if (cqe.res > 0) {
    request.sent += static_cast<uint32_t>(cqe.res);
    ready->emplace_back(channel,
                        event::kSent | (static_cast<unsigned>(cqe.res) << event::kDetailShift));
    if (request.sent < request.length) {
      request.submitted = false;  // more may join it before it goes again
      to_send_.push_back(id);
    } else {
      free_send(id);
    }
    return;
  }
  free_send(id);
  const int err = cqe.res < 0 ? -cqe.res : EPIPE;
  ready->emplace_back(channel,
                      event::kFailed | (static_cast<unsigned>(err) << event::kDetailShift));
}

std::string_view UringPoller::received(unsigned buffer) const {
  return {buffers_.get() + size_t{buffer} * kBufferSize, lengths_[buffer]};
}

// Back into the ring; the tail moves (and the kernel sees them) before the
// next wait.
void UringPoller::release(unsigned buffer) {
  io_uring_buf_ring_add(buffer_ring_, buffers_.get() + size_t{buffer} * kBufferSize, kBufferSize,
                        static_cast<unsigned short>(buffer), io_uring_buf_ring_mask(kBuffers),
                        static_cast<int>(released_));
  ++released_;
}

bool UringPoller::receiving(const Slot& slot) const {
  return receive_ && slot.channel->receives();
}

uint64_t UringPoller::user_data(uint32_t index) const {
  return (uint64_t{slots_[index].generation} << 32) | index;
}

void UringPoller::poll(std::chrono::microseconds timeout, Ready* ready) {
  ready->clear();
  if (released_ > 0) {
    io_uring_buf_ring_advance(buffer_ring_, static_cast<int>(released_));
    released_ = 0;
  }
  arm_queued();
  for (uint16_t id : to_send_) {
    if (!sends_[id].submitted && sends_[id].owner != kNoOwner) submit_send(id);
  }
  to_send_.clear();
  // A write recheck is due this iteration: collect what is there, no waiting.
  if (!recheck_.empty()) timeout = std::chrono::microseconds(0);
  __kernel_timespec ts{};
  __kernel_timespec* wait_limit = nullptr;
  if (timeout.count() >= 0) {
    ts.tv_sec = timeout.count() / 1'000'000;
    ts.tv_nsec = (timeout.count() % 1'000'000) * 1000;
    wait_limit = &ts;
  }
  // One io_uring_enter(): submits this iteration's requests and waits for a
  // completion or the timeout (IORING_ENTER_EXT_ARG carries it, no timeout
  // request needed). With no time to wait it asks for no wait at all: a
  // zero timeout still goes through the kernel's timed wait, which took
  // 24 us here against 0.26 us for collecting what is there
  // (BM_LoopPollWithoutWaiting).
  io_uring_cqe* first = nullptr;
  int r = 0;
  if (timeout.count() == 0) {
    r = io_uring_submit_and_get_events(&ring_);
    if (sends_follow_load_) ring_sends_now_ = false;
  } else if (!sends_follow_load_) {
    r = io_uring_submit_and_wait_timeout(&ring_, &first, 1, wait_limit, nullptr);
  } else {
    // A loop that waited has time to spare: its next replies go with the
    // next wait. One that found work waiting sends them at once.
    const auto before = std::chrono::steady_clock::now();
    r = io_uring_submit_and_wait_timeout(&ring_, &first, 1, wait_limit, nullptr);
    ring_sends_now_ = std::chrono::steady_clock::now() - before > kSpareTime;
  }
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
  if (receive_) mark_more(ready);
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
  if (cqe.user_data & kRecvBit) {
    complete_receive(cqe, ready);
    return;
  }
  if (cqe.user_data & kSendBit) {
    complete_send(cqe, ready);
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

// A message larger than a buffer arrives as several completions: each but
// a channel's last in this batch says kMore, so that the connection hands
// the whole to on_message once (and the echo goes out in one send).
void UringPoller::mark_more(Ready* ready) {
  ++batch_;
  for (auto it = ready->rbegin(); it != ready->rend(); ++it) {
    if (!(it->second & event::kData)) continue;
    Slot& slot = slots_[it->first->slot()];
    if (slot.batch == batch_) {
      it->second |= event::kMore;
    } else {
      slot.batch = batch_;
    }
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
  Slot& slot = slots_[index];
  if (receiving(slot)) {
    queue_arm(index);  // arm_queued() sorts out the receive and the poll
    return;
  }
  // An armed poll with another interest is cancelled and armed anew: the
  // new one checks readiness when armed, so nothing is missed in between.
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
  if (slot.recv_armed) cancel_receive(index);
  if (slot.send != kNoSend) {
    // The bytes handed over go now, as a send() before close() would have
    // sent them; what the socket cannot take at once is dropped with the
    // cancellation behind them. The buffer is freed by the last completion.
    const uint16_t id = slot.send;
    if (!sends_[id].submitted) submit_send(id);
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_cancel64(sqe, kSendBit | id, 0);
    io_uring_sqe_set_data64(sqe, kNoAnswer);
    sends_[id].owner = kNoOwner;
    slot.send = kNoSend;
  }
  // What the slot's receives still complete is no longer this channel's.
  slot.first_seq = slot.recv_seq + 1;
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
  for (uint64_t request : stale_) {
    io_uring_sqe* sqe = next_sqe();
    if (request & kRecvBit) {
      io_uring_prep_cancel64(sqe, request, 0);
    } else {
      io_uring_prep_poll_remove(sqe, request);
    }
    io_uring_sqe_set_data64(sqe, kCancelBit | request);
  }
  stale_.clear();
  for (uint32_t index : to_arm_) {
    Slot& slot = slots_[index];
    slot.queued = false;
    if (slot.channel == nullptr) continue;
    const unsigned interest = slot.channel->interest();
    if (!receiving(slot)) {
      // Also where the channel stopped receiving: its receive goes (what it
      // already read still arrives), a poll with the full interest comes.
      if (slot.recv_armed) cancel_receive(index);
      if (slot.armed && slot.interest != interest) cancel(index);
      if (!slot.armed) arm_poll(index, interest);
      continue;
    }
    // A receive while reading, which reports the socket's errors too; a
    // poll to wait for room to write, or for errors while not reading.
    const bool reading = (interest & event::kReadable) != 0;
    if (reading && !slot.recv_armed) arm_receive(index);
    if (!reading && slot.recv_armed) cancel_receive(index);
    const unsigned writing = interest & event::kWritable;
    const bool polling = writing != 0 || !reading;
    if (slot.armed && (!polling || slot.interest != writing)) cancel(index);
    if (!slot.armed && polling) arm_poll(index, writing);
  }
  to_arm_.clear();
}

void UringPoller::arm_poll(uint32_t index, unsigned interest) {
  Slot& slot = slots_[index];
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

void UringPoller::arm_receive(uint32_t index) {
  Slot& slot = slots_[index];
  if (++slot.recv_seq >= kSequenceLimit) slot.recv_seq = 1;  // 2^30 receives: wraps
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_recv_multishot(sqe, slot.channel->fd(), nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufferGroup;
  io_uring_sqe_set_data64(sqe, kRecvBit | (uint64_t{slot.recv_seq} << 32) | index);
  slot.recv_armed = true;
}

void UringPoller::cancel_receive(uint32_t index) {
  Slot& slot = slots_[index];
  const uint64_t request = kRecvBit | (uint64_t{slot.recv_seq} << 32) | index;
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_cancel64(sqe, request, 0);
  io_uring_sqe_set_data64(sqe, kCancelBit | request);
  slot.recv_armed = false;
}

// A receive's completion: bytes in a buffer, the end of the stream (0), or
// a failure (ENOBUFS: the buffers ran out for now; ECANCELED: ours).
void UringPoller::complete_receive(const io_uring_cqe& cqe, Ready* ready) {
  const auto index = static_cast<uint32_t>(cqe.user_data);
  const auto seq = static_cast<uint32_t>(cqe.user_data >> 32) & (kSequenceLimit - 1);
  const bool has_buffer = (cqe.flags & IORING_CQE_F_BUFFER) != 0;
  const unsigned buffer = cqe.flags >> IORING_CQE_BUFFER_SHIFT;
  Slot* slot = index < slots_.size() ? &slots_[index] : nullptr;
  // This registration's receive, armed or cancelled (a wrapped sequence
  // after 2^30 receives in one slot is not told apart: harmless, the
  // stale completions of a slot come within one iteration).
  const bool ours = slot != nullptr && slot->channel != nullptr && seq >= slot->first_seq &&
                    seq <= slot->recv_seq;
  const bool spent = !(cqe.flags & IORING_CQE_F_MORE);
  if (slot != nullptr && spent && seq == slot->recv_seq) slot->recv_armed = false;
  if (!ours) {
    if (has_buffer) release(buffer);
    return;
  }
  Channel* channel = slot->channel;
  const bool reading = (channel->interest() & event::kReadable) != 0;
  if (cqe.res > 0 && has_buffer) {
    lengths_[buffer] = static_cast<uint32_t>(cqe.res);
    ready->emplace_back(channel, event::kData | (buffer << event::kDetailShift));
    // The kernel stops a multishot receive now and then; one more is armed
    // while the channel reads.
    if (spent && seq == slot->recv_seq) queue_arm(index);
    return;
  }
  if (has_buffer) release(buffer);
  if (cqe.res == 0) {
    // The peer's FIN, after every byte before it (completions come in
    // order): told as such, so the channel makes no read to find it. Not
    // reading: the receive armed when reading resumes finds it again.
    if (reading) ready->emplace_back(channel, event::kReadable | event::kEnd);
    return;
  }
  if (cqe.res == -ENOBUFS) {
    // The buffers ran out in this batch (many connections, large messages):
    // the channel reads for itself this time, and the receive armed again
    // with the next wait finds the buffers back.
    if (seq == slot->recv_seq) queue_arm(index);
    if (reading) ready->emplace_back(channel, event::kReadable);
    return;
  }
  if (cqe.res == -ECANCELED) return;
  if (reading) {
    ready->emplace_back(channel,
                        event::kFailed | (static_cast<unsigned>(-cqe.res) << event::kDetailShift));
  }
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
  // Never 0 (user_data 0 is kNoAnswer), never 2^30 or more (kRecvBit, kCancelBit).
  if (++slot->generation >= kSequenceLimit) slot->generation = 1;
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

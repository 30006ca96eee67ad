// UringPoller: the io_uring backend (poller.h). Internal, loop thread only.
//
// Readiness, not completion: each registered channel has one poll request
// (IORING_OP_POLL_ADD) in the kernel, even with no interest (epoll, too,
// reports errors and hang-ups to a channel that asks for nothing), so every
// Channel, and everything built on channels, works exactly as on epoll.
// All requests made during one loop iteration go to the kernel with the
// next wait, in one io_uring_enter().
//
// Why one-shot polls, re-armed after each event, and not multishot ones
// (IORING_POLL_ADD_MULTI): a multishot poll posts a completion only when the
// socket's wait queue is woken, i.e. it is edge-triggered, and the kernel
// refuses IORING_POLL_ADD_LEVEL together with MULTI (EINVAL, checked on
// 6.18). Channels rely on level-triggered readiness: a connection reads at
// most max_read_per_wakeup bytes per event and the acceptor a bounded batch,
// and expect to hear again about what they left. A one-shot poll checks
// readiness when it is armed, which is exactly level triggering; the re-arm
// costs one submission entry, not a system call.
//
// One exception: the kernel adds POLLRDHUP to every poll's mask (with
// POLLERR and POLLHUP), so after a peer's FIN every poll of that socket
// completes at once, whatever it asks for; epoll reports nothing to a
// channel that does not read. A channel that waits to write (or for errors
// only) on such a socket would spin. It gets a multishot poll instead, which
// reports wake-ups (room to write, a reset) and not the lasting FIN; that is
// edge-triggered, which suits writing: a channel waits for room only after a
// write found none.
//
// Lifetimes: a completion names its channel through user_data = (generation
// << 32 | slot), an index into slots_, never a pointer. A slot's generation
// changes whenever its poll request is cancelled or its channel removed, so
// a completion that was already on its way (a poll that fired as it was
// cancelled, in the same or a later iteration) finds another generation and
// is dropped: it can reach neither freed memory nor the slot's next channel.
#pragma once

#include <liburing.h>

#include <cstdint>

#include "poller.h"

namespace tcpkit {

class UringPoller final : public Poller {
 public:
  // Fails with the setup's error (ENOSYS, EPERM, ENOMEM: unavailable, see
  // poller.cpp; EMFILE), or ENOSYS for a kernel without the features used
  // here (IORING_FEAT_NODROP, 5.5; IORING_FEAT_EXT_ARG, 5.11).
  static Result<std::unique_ptr<Poller>> create();
  UringPoller() = default;
  ~UringPoller() override;
  UringPoller(const UringPoller&) = delete;
  UringPoller& operator=(const UringPoller&) = delete;

  IoBackend backend() const override { return IoBackend::kUring; }
  void poll(std::chrono::milliseconds timeout, Ready* ready) override;
  void update(Channel* channel) override;
  void remove(Channel* channel) override;

 private:
  struct Slot {
    Channel* channel = nullptr;  // null while the slot is free
    uint32_t generation = 1;     // never 0: user_data 0 means "no answer wanted"
    unsigned char interest = 0;  // what the armed poll asks for (channel.h's bits)
    bool armed = false;          // a poll request of this generation is in the kernel
    bool queued = false;         // in to_arm_
    bool peer_closed = false;    // POLLRDHUP seen while not reading: see complete()
    bool multishot = false;      // the armed poll is a multishot one
  };

  uint64_t user_data(uint32_t index) const;
  void complete(const io_uring_cqe& cqe, Ready* ready);
  void queue_arm(uint32_t index);
  void arm_queued();
  void cancel(uint32_t index);
  static void next_generation(Slot* slot);
  io_uring_sqe* next_sqe();
  void submit();

  io_uring ring_{};
  bool initialized_ = false;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  std::vector<uint32_t> to_arm_;  // slots whose poll is armed with the next wait
  // Slots (and the generation armed) whose multishot poll waits for room to
  // write: such a poll is edge-triggered, so the room that came before it was
  // armed must be looked for once, by a writable event of our own.
  std::vector<std::pair<uint32_t, uint32_t>> recheck_;
  // Polls (their user_data) whose cancellation must be tried again.
  std::vector<uint64_t> stale_;
};

}  // namespace tcpkit

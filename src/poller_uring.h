// UringPoller: the io_uring backend (poller.h). Internal, loop thread only.
//
// Readiness for most channels: each registered channel has one poll
// request (IORING_OP_POLL_ADD) in the kernel, even with no interest (epoll,
// too, reports errors and hang-ups to a channel that asks for nothing), so
// every Channel, and everything built on channels, works as on epoll.
// Completion for the reads of connections: see "Receiving" below. All
// requests made during one loop iteration go to the kernel with the next
// wait, in one io_uring_enter().
//
// Why one-shot polls, re-armed after each event, and not multishot ones
// (IORING_POLL_ADD_MULTI): a multishot poll posts a completion only when the
// socket's wait queue is woken, i.e. it is edge-triggered, and the kernel
// refuses IORING_POLL_ADD_LEVEL together with MULTI (EINVAL, checked on
// 6.18). Channels rely on level-triggered readiness: a connection reads at
// most max_read_per_wakeup bytes per event and the acceptor a bounded batch,
// and expect to hear again about what they left. A one-shot poll checks
// readiness when it is armed, which is exactly level triggering; the re-arm
// costs one submission entry, not a system call. Measured: a multishot poll
// for a connection reading in bulk, the connection saying when a read took
// all it asked for, saved about 3% of the server's CPU at 1000 x 64 KiB and
// nothing at 10 or 100 connections; and a FIN queued behind bytes that a
// short read drained came with no wake-up of its own and was never reported
// (TcpConnection.ABurstLargerThanTheReadCapArrivesWholeAndThenItsEnd).
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
// Receiving: for a channel that receives (a TcpConnection) and wants to
// read, the ring holds a multishot receive instead of a readable poll. The
// kernel reads into buffers of one provided-buffer ring per loop, picking a
// buffer per completion, and the completion hands the bytes over (kData):
// no readiness event, no read() system call per message. A poll is then
// armed only while the channel waits to write. Bytes that arrive after the
// channel stopped reading (the receive's cancellation is on its way) are
// still the channel's: the kernel took them from the socket. So a receive's
// completions are delivered as long as the channel's registration lasts,
// whatever its interest; its end (EOF) is reported as kReadable|kEnd while
// the channel reads (no read needed to find it) and found again by the
// receive armed when reading resumes. Used where the ring has DEFER_TASKRUN
// (completions come only inside our io_uring_enter, so none arrives after
// a cancellation went in) and the kernel takes a buffer ring (5.19);
// TCPKIT_URING_RECEIVE=0 turns it off, for comparisons. A connection that
// fills a whole buffer stops receiving (Channel::set_receives) and reads
// for itself after readable polls until its reads are small again: the
// buffers save a system call per message, which pays for small messages,
// but cost a second copy, which does not pay for bulk (one make bench: 1.6x
// the CPU per message at 100 x 64 KiB before the switch).
//
// Sending: a connection hands its small writes (up to event::kSendMax) to
// the poller instead of calling send() (Poller::send); the poller copies
// them into one of its send buffers and submits one IORING_OP_SEND per
// connection with the next wait, so an iteration's echoes, the receives'
// re-arms and the wait are one io_uring_enter(). Later writes of the same
// iteration join the same buffer; one it has no room for takes the
// buffer's bytes back (take_back()), and the connection sends them and it
// by one send() at once. So whatever an iteration writes, a connection's
// bytes are in the kernel or in its one buffer, which goes to the kernel
// even when the connection closes (remove()): a close drops only what the
// socket refused, as on epoll, not replies queued behind the buffer. A
// connection has at most one send on its way, and queues behind it what
// comes next (TcpConnection::write_wire()), which keeps its bytes in order.
// Larger writes, and writes that find no free buffer, are sent by the
// connection itself, as on epoll. A send completes with what the socket
// took; the rest is submitted again. The kernel reads a send's buffer until
// its completion, so the buffer stays the poller's, not the connection's: a
// connection removed with a send on its way leaves it to the poller, which
// cancels it and frees the buffer when the last completion comes.
//
// When: after a wait that lasted (the loop has time to spare, as under a
// load it can take), small writes go through the ring; after a wait that
// found completions waiting (a saturated loop), by send(), so that the
// first replies of a batch do not wait for the whole batch to be read.
// Sending through the ring always (TCPKIT_URING_SEND=1) saves the most
// system calls, but an echo's send then completes inside the same
// io_uring_enter() and its completion wakes the loop for one more
// iteration: with one connection that costs more than the send() it saves.
// TCPKIT_URING_SEND=0 sends by send() always. Measured with
// bench/cpu-per-cell, closed loop and with --rate, on a machine whose
// system calls cost about 1 us (BM_SystemCall): the policy here spent
// 0.53-0.82x the bare epoll server's CPU per message with 10 to 1,000
// connections of 16 B and 4 KiB, against 0.73-0.95x with send() always,
// and moved 4-40% more messages per second closed loop; with one
// connection it is level with send() always, where the ring always is not.
// An earlier machine, whose system calls cost a tenth of that, measured
// ring sends always as fewer messages per second at saturation. A
// connection with a send on its way queues behind it either way.
//
// Lifetimes: a completion names its channel through user_data = (generation
// << 32 | slot), an index into slots_, never a pointer. A slot's generation
// changes whenever its poll request is cancelled or its channel removed, so
// a completion that was already on its way (a poll that fired as it was
// cancelled, in the same or a later iteration) finds another generation and
// is dropped: it can reach neither freed memory nor the slot's next channel.
#pragma once

#include <liburing.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

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
  void poll(std::chrono::microseconds timeout, Ready* ready) override;
  void update(Channel* channel) override;
  void remove(Channel* channel) override;
  void receives_changed(Channel* channel) override { update(channel); }

  std::string_view received(unsigned buffer) const override;
  void release(unsigned buffer) override;
  size_t send(Channel* channel, const char* data, size_t len) override;
  std::string_view take_back(Channel* channel) override;

 private:
  struct Slot {
    Channel* channel = nullptr;  // null while the slot is free
    uint32_t generation = 1;     // never 0: user_data 0 means "no answer wanted"
    unsigned char interest = 0;  // what the armed poll asks for (channel.h's bits)
    bool armed = false;          // a poll request of this generation is in the kernel
    bool queued = false;         // in to_arm_
    bool peer_closed = false;    // POLLRDHUP seen while not reading: see complete()
    bool multishot = false;      // the armed poll is a multishot one
    bool recv_armed = false;     // a multishot receive (recv_seq) is in the kernel
    uint32_t recv_seq = 0;       // the last receive armed for this slot
    uint32_t first_seq = 1;      // the first receive of the slot's current channel
    uint32_t batch = 0;          // the last batch in which this slot received bytes
    uint16_t send = 0xFFFF;      // the channel's send buffer (kNoSend: none)
  };
  // One send buffer's request: whose, how many bytes, how many of them left.
  struct Send {
    uint32_t owner = 0;  // the slot, or kNoOwner once its channel is removed
    uint32_t length = 0;
    uint32_t sent = 0;
    bool submitted = false;  // on its way: no more bytes join it
  };

  uint64_t user_data(uint32_t index) const;
  bool set_up_buffers();
  void complete_receive(const io_uring_cqe& cqe, Ready* ready);
  void mark_more(Ready* ready);
  void arm_receive(uint32_t index);
  void cancel_receive(uint32_t index);
  void arm_poll(uint32_t index, unsigned interest);
  // The slot's channel reads through a multishot receive.
  bool receiving(const Slot& slot) const;
  void complete(const io_uring_cqe& cqe, Ready* ready);
  void queue_arm(uint32_t index);
  void arm_queued();
  void cancel(uint32_t index);
  void set_up_sends();
  char* send_buffer(unsigned id) const;
  void submit_send(uint16_t id);
  void complete_send(const io_uring_cqe& cqe, Ready* ready);
  void free_send(uint16_t id);
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

  // The provided-buffer ring: kBuffers buffers of kBufferSize bytes.
  bool receive_ = false;
  io_uring_buf_ring* buffer_ring_ = nullptr;
  size_t buffer_ring_bytes_ = 0;
  // Page-aligned, so that every buffer starts on a cache line: the
  // kernel's copy into it, and ours out of it, run fastest there.
  struct PageFree {
    void operator()(char* p) const noexcept;
  };
  std::unique_ptr<char[], PageFree> buffers_;
  std::vector<uint32_t> lengths_;  // of each buffer's bytes, while a kData event holds it
  unsigned released_ = 0;          // buffers given back since the ring's tail last moved
  uint32_t batch_ = 0;             // counts the waits, for Slot::batch

  // The send buffers: kSends of event::kSendMax bytes.
  std::unique_ptr<char[], PageFree> send_memory_;
  std::vector<Send> sends_;
  std::vector<uint16_t> free_sends_;
  std::vector<uint16_t> to_send_;  // submitted with the next wait
  bool ring_sends_now_ = false;    // the ring takes new small writes
  // The default (not TCPKIT_URING_SEND=1 or 0): ring_sends_now_ after a
  // wait longer than kSpareTime, not after one that found completions
  // waiting.
  bool sends_follow_load_ = false;
  static constexpr std::chrono::microseconds kSpareTime{20};
};

}  // namespace tcpkit

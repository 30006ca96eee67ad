// Channel: one descriptor's interest set and event handler on one EventLoop.
//
// Internal (a detail header because TcpConnection holds its channel by
// value). A Channel borrows its descriptor (the owner, a TcpConnection or
// Acceptor, holds the UniqueFd) and belongs to exactly one loop; every method
// must run in that loop's thread. The owner must call disable_all() and
// remove() before destroying it. The backend's events reach the handler as
// the small mask below, translated in one place per backend (Poller).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace tcpkit {

class EventLoop;

namespace event {
constexpr unsigned kReadable = 1;  // data, or EOF, to read
constexpr unsigned kWritable = 2;  // room in the send buffer
constexpr unsigned kHangup = 4;    // both directions are finished (or reset)
constexpr unsigned kError = 8;     // a pending socket error (read it with SO_ERROR)
// Only for a channel that receives (set_receives(), the io_uring backend):
// the backend has read for it. kData: bytes are in the backend's buffer
// detail(mask) (EventLoop::received()); kFailed: the read failed with the
// errno detail(mask).
constexpr unsigned kData = 16;
constexpr unsigned kFailed = 32;
// With kData: more of this channel's bytes follow in the same batch, so the
// owner may keep these until the last (one on_message for the lot).
constexpr unsigned kMore = 64;
// Only for a channel whose owner hands bytes to the backend to send
// (EventLoop::send_for(), the io_uring backend): detail(mask) of them left
// for the peer. A send that fails is kFailed.
constexpr unsigned kSent = 128;
// With kReadable, for a channel that receives: the backend's receive found
// the end of the stream, so the owner's read would return 0 (it need not
// make it).
constexpr unsigned kEnd = 256;
constexpr unsigned kDetailShift = 16;
constexpr unsigned detail(unsigned mask) {
  return mask >> kDetailShift;
}
// A read of at least this many bytes says the peer sends in bulk: reading
// it in one read() into the loop's buffer copies once, where the backend's
// buffers take it in pieces and copy twice (TcpConnection switches).
constexpr size_t kBulkRead = size_t{16} * 1024;
// The most bytes one backend send carries (a kSent's detail holds them).
constexpr size_t kSendMax = size_t{16} * 1024;
static_assert(kSendMax < (size_t{1} << (32 - kDetailShift)));
}  // namespace event

class Channel {
 public:
  Channel(EventLoop* loop, int fd) : loop_(loop), fd_(fd) {}
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Events go to owner->*Method(mask), or owner->*Method() for a handler
  // that needs no mask. Kept as a plain function and owner pointer rather
  // than a std::function: every connection has a channel, and this keeps
  // 16 bytes of each.
  template <auto Method, typename Owner>
  void set_handler(Owner* owner) {
    owner_ = owner;
    handler_ = [](void* self, unsigned mask) {
      if constexpr (std::is_invocable_v<decltype(Method), Owner*, unsigned>) {
        (static_cast<Owner*>(self)->*Method)(mask);
      } else {
        (static_cast<Owner*>(self)->*Method)();
      }
    };
  }
  // The owner must outlive the call; TcpConnection keeps itself alive
  // for the length of its handler.
  void handle_event(unsigned mask) { handler_(owner_, mask); }

  void enable_reading() { update(interest_ | event::kReadable); }
  void disable_reading() { update(interest_ & ~event::kReadable); }
  void enable_writing() { update(interest_ | event::kWritable); }
  void disable_writing() { update(interest_ & ~event::kWritable); }
  void disable_all() { update(0); }
  bool is_reading() const { return interest_ & event::kReadable; }
  bool is_writing() const { return interest_ & event::kWritable; }
  // Unregisters from the loop; the channel may then be destroyed.
  void remove();

  int fd() const { return fd_; }
  unsigned interest() const { return interest_; }
  EventLoop* owner_loop() const { return loop_; }

  // The Poller's bookkeeping: whether the backend knows this descriptor,
  // and where the io_uring backend keeps it (its slot table, poller_uring.h).
  bool registered() const { return registered_; }
  // Whether the owner takes bytes that the backend has read for it (kData)
  // instead of reading itself when told kReadable. Backends that cannot
  // read (epoll) report readiness either way.
  bool receives() const { return receives_; }
  // Changes it; a registered channel's backend hears of it at once.
  void set_receives(bool on) {
    if (on != receives_) change_receives(on);  // inline: every read asks
  }
  void set_registered(bool on) { registered_ = on; }
  uint32_t slot() const { return slot_; }
  void set_slot(uint32_t slot) { slot_ = slot; }

 private:
  void update(unsigned interest);
  void change_receives(bool on);

  EventLoop* loop_;
  const int fd_;
  unsigned interest_ = 0;
  bool registered_ = false;
  bool receives_ = false;
  uint32_t slot_ = 0;
  void (*handler_)(void* owner, unsigned mask) = nullptr;
  void* owner_ = nullptr;
};

}  // namespace tcpkit

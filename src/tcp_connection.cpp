#include "tcpkit/tcp_connection.h"

#include <sys/uio.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <limits>
#include <utility>

#include "callback_table.h"
#include "sys.h"
#include "tcpkit/detail/saturate.h"
#include "tcpkit/tls_context.h"
#include "tcpkit/tls_session.h"

namespace tcpkit {
namespace {

std::error_code errno_code(int err) {
  return {err, std::generic_category()};
}

// What a connection starts with, before its owner hands it a table.
const std::shared_ptr<const ConnectionCallbacks>& no_callbacks() {
  static const auto kEmpty = std::make_shared<const ConnectionCallbacks>();
  return kEmpty;
}

// How large a read cap the loop's shared read buffer makes room for.
constexpr size_t kSharedReadRoom = size_t{1} << 20;

// Where in a page a read into the loop's shared buffer starts: its middle.
// The kernel's copy to user space slows down many times on some CPUs when
// the destination lies a few bytes past the source's offset within a page
// (BM_ReadLoopbackAtOffset), and a bulk sender's bytes sit in the kernel's
// pages at or a little past a page start: sends of whole pages keep the
// offset where it was, and a 64 KiB message leaves 53 bytes beyond one
// segment of loopback's MSS. A read at a line past a page start then lands
// 11 bytes past its source; tcpkit bench at 100 x 64 KiB made about half
// the minimal client's messages/s that way, level with it from a page's
// middle (bench/client-vs-minimal).
constexpr size_t kSharedReadPageOffset = Buffer::kCopyPage / 2;

}  // namespace

// The TLS layer of a connection that has one.
struct TcpConnection::TlsLayer {
  explicit TlsLayer(TlsSession s) : session(std::move(s)) {}
  TlsSession session;
  TimerId handshake_timer = 0;
};

// The echo of a connection that echoes (start_echo()).
struct TcpConnection::Echo {
  explicit Echo(EchoCallback cb) : on_echo(std::move(cb)) {}
  EchoCallback on_echo;
  // Made at the first bulk read, so that a connection of small messages
  // holds no pipe (two descriptors, and the kernel's pipe memory).
  UniqueFd pipe_read;
  UniqueFd pipe_write;
  // Reads copy: EchoSplice says so for this peer, or the kernel refused a
  // pipe (EMFILE).
  bool no_pipe = false;
};

TcpConnection::TcpConnection(EventLoop* loop, uint64_t id, UniqueFd fd, const Endpoint& local,
                             const Endpoint& peer, std::shared_ptr<const ConnectionOptions> options)
    : loop_(loop),
      channel_(loop, fd.get()),
      fd_(std::move(fd)),
      // A cap of 0 would read nothing, which reads as the peer's FIN: 1.
      read_cap_(static_cast<uint32_t>(std::clamp<size_t>(options->max_read_per_wakeup, 1,
                                                         std::numeric_limits<uint32_t>::max()))),
      options_(std::move(options)),
      callbacks_(no_callbacks()),
      id_(id),
      local_(local),
      peer_(peer) {
  channel_.set_handler<&TcpConnection::handle_event>(this);
  channel_.set_receives(true);
}

TcpConnection::~TcpConnection() {
  assert(!channel_.registered());
}

void TcpConnection::set_callbacks(std::shared_ptr<const ConnectionCallbacks> callbacks) {
  if (!callbacks) callbacks = no_callbacks();
  auto old = std::exchange(callbacks_, std::move(callbacks));
  // A callback that changes callbacks may be running from the old table,
  // so it is freed after the current event instead of under the running
  // callback's feet. That the table has other holders proves nothing: a
  // TcpClient destroyed in its own on_message drops its one at once. The
  // empty table a connection starts with runs nothing, and stays.
  if (old != no_callbacks()) loop_->queue_in_loop([old = std::move(old)] {});
}

void TcpConnection::set_on_connection(ConnectionCallback cb) {
  set_callbacks(with_callback(callbacks_, &ConnectionCallbacks::on_connection, std::move(cb)));
}
void TcpConnection::set_on_message(MessageCallback cb) {
  set_callbacks(with_callback(callbacks_, &ConnectionCallbacks::on_message, std::move(cb)));
}
void TcpConnection::set_on_write_complete(WriteCompleteCallback cb) {
  set_callbacks(with_callback(callbacks_, &ConnectionCallbacks::on_write_complete, std::move(cb)));
}
void TcpConnection::set_on_high_water_mark(HighWaterMarkCallback cb) {
  set_callbacks(with_callback(callbacks_, &ConnectionCallbacks::on_high_water_mark, std::move(cb)));
}
void TcpConnection::set_on_peer_closed(PeerClosedCallback cb) {
  set_callbacks(with_callback(callbacks_, &ConnectionCallbacks::on_peer_closed, std::move(cb)));
}
void TcpConnection::set_on_handshake(ConnectionCallback cb) {
  set_callbacks(with_callback(callbacks_, &ConnectionCallbacks::on_handshake, std::move(cb)));
}

void TcpConnection::connect_established(const TlsContext* tls, std::string_view server_name) {
  loop_->assert_in_loop_thread();
  assert(state() == State::connecting);
  state_.store(State::connected, std::memory_order_release);
  channel_.enable_reading();
  reading_ = true;
  last_active_ = loop_->now();
  if (options_->idle_timeout.count() > 0) arm_idle_timer(idle_limit());
  Result<void> layered;
  if (tls != nullptr) layered = start_tls(*tls, server_name);
  auto self = shared_from_this();
  if (callbacks_->on_connection) callbacks_->on_connection(self);
  announced_ = true;
  // A close decided meanwhile (by on_connection, or a failed send of the
  // TLS hello) shows from now on.
  if (close_decided()) {
    State expected = State::connected;
    state_.compare_exchange_strong(expected, State::disconnecting);
  }
  if (!layered) {
    force_close(layered.error().code());
    return;
  }
  // Without a layer the connection is ready for end-to-end traffic now.
  if (!tls_ && state() == State::connected && callbacks_->on_handshake)
    callbacks_->on_handshake(self);
}

void TcpConnection::connect_destroyed() {
  loop_->assert_in_loop_thread();
  if (state() != State::disconnected) {
    // The owner tears the connection down without an I/O event (server
    // stop): a close this side decides, so TLS says close_notify.
    send_close_notify();
    state_.store(State::disconnected, std::memory_order_release);
    if (!close_reason_) close_reason_ = std::make_error_code(std::errc::operation_canceled);
    channel_.disable_all();
    if (idle_timer_ != 0) loop_->cancel(idle_timer_);
    if (tls_ && tls_->handshake_timer != 0) loop_->cancel(tls_->handshake_timer);
    if (callbacks_->on_connection) callbacks_->on_connection(shared_from_this());
  }
  channel_.remove();
  // Users may keep a closed connection for a while; its TLS state is of no
  // more use, and is the larger part of it. The echo's pipe closes too.
  tls_.reset();
  echo_.reset();
  piped_ = 0;
  // Close the socket now, not when the last reference goes: users may keep
  // a closed connection (a chat room's member list) for a while, and the
  // peer must see force_close() or an idle timeout at once.
  fd_.reset();
}

// ---- events ---------------------------------------------------------------

void TcpConnection::handle_event(unsigned mask) {
  // A client's options and callback table are its own, and with many
  // clients on a loop they are out of the cache at each event (a server's
  // connections share theirs, which stay warm). Asked for now, their lines
  // come in while the event starts and the kernel reads and sends, where
  // each would otherwise be a miss of its own after the system call.
  __builtin_prefetch(options_.get());
  __builtin_prefetch(&callbacks_->on_message);
  __builtin_prefetch(&callbacks_->on_write_complete);
  // The user's state (context()) is the connection's own, as cold as it,
  // and what a callback touches first.
  if (const void* state = context_.get()) __builtin_prefetch(state);
  // A handler may drop the last outside reference (a close erases the
  // connection from its server): `self` keeps the connection alive until
  // this returns, and is the pointer on_message gets. (The channel is not
  // tied for this: that would take a second reference per event.)
  const TcpConnectionPtr self = weak_from_this().lock();
  if (!self) return;
  if (mask & event::kData) {
    handle_data(self, loop_->received(event::detail(mask)), (mask & event::kMore) != 0);
    return;
  }
  if (mask & event::kSent) {
    handle_sent(event::detail(mask));
    return;
  }
  if (mask & event::kFailed) {
    handle_close(errno_code(static_cast<int>(event::detail(mask))));
    return;
  }
  if (mask & event::kError) {
    int err = sys::socket_error(fd_.get());
    handle_close(errno_code(err != 0 ? err : ECONNRESET));
    return;
  }
  // Not after the end was read: the io_uring backend may report the FIN
  // behind bytes that carried the end already (a TLS close_notify).
  if ((mask & event::kReadable) && reading_) handle_read(self, (mask & event::kEnd) != 0);
  if (state() == State::disconnected) return;
  if (mask & event::kWritable) handle_write();
  if (state() == State::disconnected) return;
  // Hang-up without readable data: both directions are done, or the peer
  // reset while we were not reading.
  if ((mask & event::kHangup) && !(mask & event::kReadable)) {
    if (!reading_ && !peer_closed_) {
      park_until_resumed();
      return;
    }
    // Output still waiting has nowhere to go: the peer is gone, not just
    // done sending (a Unix socket's peer that closed; on io_uring the echo
    // of its last bytes may still wait for the ring while the hang-up comes).
    if (!peer_closed_) {
      handle_close(errno_code(ECONNRESET));
    } else if (output_bytes() > 0) {
      handle_close(errno_code(EPIPE));
    } else {
      handle_close(make_error_code(Errc::peer_closed));
    }
  }
}

// Reading is paused (a proxy waits for its other side) and EPOLLHUP came:
// our FIN is out and the peer's has arrived, but data we have not read yet
// may sit in front of it. Linux reports the hang-up as soon as the FIN is
// processed, not once it is read, so this is no reset (a reset comes with
// EPOLLERR) and nothing may be dropped. The socket leaves epoll, which would
// otherwise report the level-triggered hang-up in a busy loop, until
// resume_reading() registers it again; the reads then reach the data and the
// EOF. Nothing is left to write: our FIN went out after the output drained.
void TcpConnection::park_until_resumed() {
  channel_.remove();
}

void TcpConnection::handle_read(const TcpConnectionPtr& self, bool at_end) {
  // Bytes received while paused go before what this read finds (the FIN).
  take_held_input(self);
  if (state() == State::disconnected || !reading_) return;
  if (at_end) {  // the backend's receive read the FIN: no read() to find it again
    peer_sent_fin();
    return;
  }
  // An echoing connection whose peer sends in bulk, with nothing ahead of
  // the echo: through the pipe, inside the kernel.
  if (echo_ && !channel_.receives() && output_bytes() == 0 && !echo_->no_pipe) {
    splice_echo(self);
    return;
  }
  // With nothing pending, read into the loop's shared buffer and keep only
  // what on_message leaves behind: no allocation per message, and no memory
  // held by a connection between messages. With TLS every byte read goes to
  // the layer at once, so the shared buffer always fits.
  const bool shared = tls_ || input_.readable_bytes() == 0;
  Buffer& in = shared ? loop_->shared_read_buffer() : input_;
  // A read takes all there is, up to the cap, even for a connection alone
  // in its loop's iteration. Reading such a one in pieces (so that an echo
  // sends the first back while the peer is still sending the rest) doubled
  // one bulk connection's echo rate against a busy-polling client on one
  // machine, and on another cost twice the CPU per message and about a
  // fifth of the rate against a client that sleeps between reads: each
  // piece wakes it (bench/cpu-per-cell 1 65536). Whole reads cost the
  // least CPU on both.
  const size_t cap = read_cap_;
  // The shared buffer gets room for a whole read once (its pages are
  // touched only as reads reach them), so each read is one read() into it
  // (Buffer::read_fd) and not a readv() that spills over; the read starts
  // in a page's middle.
  if (shared && cap <= kSharedReadRoom && in.readable_bytes() == 0) {
    in.reset_to_page_offset(kSharedReadPageOffset, cap);
  }
  ssize_t n = in.read_fd(fd_.get(), cap);
  if (n > 0) {
    count_read(static_cast<size_t>(n));
    deliver(self, in, shared);
    return;
  }
  if (n == -EAGAIN || n == -EINTR) return;
  if (n < 0) {
    handle_close(errno_code(static_cast<int>(-n)));
    return;
  }
  // recv() returned 0: the peer sent FIN (with TLS, perhaps without its
  // close_notify: a truncation, which peer_sent_fin() notes and otherwise
  // handles as the FIN it is).
  peer_sent_fin();
}

// A read of `n` bytes by the connection itself (read() or splice()).
// Small reads again: back to the backend's receive, where it has one (and
// for an echo, to the copying way); after several in a row, not at the
// short tail of every large message (each switch cancels one request and
// arms another, and the first piece of the next large message would come
// through the buffers). A bulk read here (the backend's buffers ran out)
// says the same as a full buffer in handle_data(): this peer sends in bulk.
void TcpConnection::count_read(size_t n) {
  if (n >= event::kBulkRead) {
    small_reads_ = 0;
    channel_.set_receives(false);
  } else if (!channel_.receives() && ++small_reads_ >= kSmallReadsToReceive) {
    small_reads_ = 0;
    channel_.set_receives(true);
  }
  bytes_in_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  last_active_ = loop_->now();
}

// Bytes the kernel took for the peer, on every path and backend: activity
// for the idle timeout, as a read is (see arm_idle_timer() for the rest).
void TcpConnection::count_sent(size_t n) {
  if (n == 0) return;
  bytes_out_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  last_active_ = loop_->now();
}

// What was read, in `in` (the loop's shared buffer when `shared`, else
// input_), to the TLS layer or on_message; input_ keeps what is left.
void TcpConnection::deliver(const TcpConnectionPtr& self, Buffer& in, bool shared) {
  if (tls_) {
    receive_tls(in);
    return;
  }
  to_user(self, in);
  if (tls_ && in.readable_bytes() > 0) {
    // on_message started TLS: what it left is the layer's first bytes.
    receive_tls(in);
    return;
  }
  // on_message started the echo: what it left goes back first.
  if (echo_) echo_bytes(self, in);
  if (shared && in.readable_bytes() > 0 && callbacks_->on_message)
    input_.append(in.peek(), in.readable_bytes());
  if (shared) in.retrieve_all();
  input_.release_if_empty();
}

// Bytes that the io_uring backend received for this connection (a kData
// event): the same path as bytes read after a readable event.
void TcpConnection::handle_data(const TcpConnectionPtr& self, std::string_view data, bool more) {
  bytes_in_.fetch_add(data.size(), std::memory_order_relaxed);
  last_active_ = loop_->now();
  // A full buffer: the peer sends in bulk, which reads copy once (handle_read).
  if (data.size() >= event::kBulkRead) channel_.set_receives(false);
  if (reading_ && !tls_ && input_.readable_bytes() > 0 &&
      input_.readable_bytes() + data.size() > read_cap_) {
    // What was gathered goes first: one delivery brings no more than one
    // read may take (fairness, and the high-water mark's bound).
    to_user(self, input_);
    input_.release_if_empty();
    if (state() == State::disconnected) return;
  }
  if (more && reading_ && !tls_ && input_.readable_bytes() + data.size() <= read_cap_) {
    // More of this read follows in the batch: gathered, delivered with the last.
    input_.append(data.data(), data.size());
    return;
  }
  if (!reading_) {
    // Received before the receive's cancellation reached the kernel: the
    // bytes are out of the socket, so they wait here, in order, until
    // reading resumes (deliver_held_input()).
    if (tls_) {
      tls_->session.feed_ciphertext(data.data(), data.size());
    } else {
      input_.append(data.data(), data.size());
    }
    held_input_ = true;
    return;
  }
  // Held bytes come first (in input_, or in the TLS layer), and go with these.
  held_input_ = false;
  const bool shared = tls_ || input_.readable_bytes() == 0;
  Buffer& in = shared ? loop_->shared_read_buffer() : input_;
  in.append(data.data(), data.size());
  deliver(self, in, shared);
}

// Reading resumed: what waits for on_message goes to it, as a read would
// have brought it, before anything that comes after it (the next bytes, the
// end of the stream: take_held_input()). That is what handle_data() held
// while reading was off, and what on_message left in input_ before the
// pause: a user that takes a few messages and pauses (a rate limit) gets
// the rest now, where a peer that has sent everything would otherwise never
// wake it again. Queued: resume_reading() may run inside another
// connection's callback.
void TcpConnection::deliver_held_input() {
  if (input_.readable_bytes() > 0) held_input_ = true;
  if (!held_input_) return;
  loop_->queue_in_loop([self = shared_from_this()] { self->take_held_input(self); });
}

void TcpConnection::take_held_input(const TcpConnectionPtr& self) {
  if (!held_input_ || !reading_ || state() == State::disconnected) return;
  held_input_ = false;
  last_active_ = loop_->now();  // for the idle timeout, it arrives now
  if (tls_) {
    Buffer nothing_new;
    receive_tls(nothing_new);
    return;
  }
  if (input_.readable_bytes() == 0) return;
  to_user(self, input_);
  input_.release_if_empty();
}

void TcpConnection::to_user(const TcpConnectionPtr& self, Buffer& in) {
  if (close_decided()) {  // the user said close: it hears nothing more
    in.retrieve_all();
    return;
  }
  if (echo_) {
    echo_bytes(self, in);
  } else if (callbacks_->on_message) {
    callbacks_->on_message(self, in);
  }
}

// ---- echo -----------------------------------------------------------------

// A peer on this host: loopback, a Unix socket, or a client that connected
// to the address it sends from.
bool TcpConnection::peer_on_this_host() const {
  return peer_.is_unix() || peer_.is_loopback() || peer_.host() == local_.host();
}

Result<void> TcpConnection::start_echo(EchoCallback on_echo, EchoSplice splice) {
  loop_->assert_in_loop_thread();
  if (tls_) return Error::from_errno(EOPNOTSUPP, "echo in the connection under TLS");
  const bool copies =
      splice == EchoSplice::never || (splice == EchoSplice::remote && peer_on_this_host());
  if (echo_) {
    echo_->on_echo = std::move(on_echo);
    echo_->no_pipe = copies;
    release_idle_pipe();
    return {};
  }
  echo_ = std::make_unique<Echo>(std::move(on_echo));
  echo_->no_pipe = copies;
  // What earlier messages left goes back before anything received later.
  if (input_.readable_bytes() > 0 && state() != State::disconnected) {
    echo_bytes(shared_from_this(), input_);
    input_.release_if_empty();
  }
  return {};
}

// Bytes that came through a read (small ones, or every one without a
// pipe): back the way a send() goes, behind whatever is queued.
void TcpConnection::echo_bytes(const TcpConnectionPtr& self, Buffer& in) {
  const size_t n = in.readable_bytes();
  if (n == 0) return;
  send_in_loop(in.peek(), n);
  in.retrieve_all();
  if (echo_->on_echo) echo_->on_echo(self, n, /*in_kernel=*/false);
}

// One read's worth, at most the read cap and what the pipe holds (64 KiB),
// from the socket into the pipe and from the pipe back into the socket.
// What the socket does not take now waits in the pipe, ahead of output_
// (output_bytes() counts it), and goes with the next writable event; reads
// meanwhile go the copying way, behind it, under the high-water mark.
// bench: 100 x 64 KiB at a fixed load, the server's CPU per message
// 0.7x a server that reads and writes (bench/cpu-per-cell).
void TcpConnection::splice_echo(const TcpConnectionPtr& self) {
  Echo& echo = *echo_;
  if (!echo.pipe_read && sys::make_pipe(&echo.pipe_read, &echo.pipe_write) < 0) {
    echo.no_pipe = true;
    handle_read(self);
    return;
  }
  const ssize_t n = sys::splice_from_socket(fd_.get(), echo.pipe_write.get(), read_cap_);
  if (n == -EAGAIN || n == -EINTR) return;
  if (n < 0) {
    handle_close(errno_code(static_cast<int>(-n)));
    return;
  }
  if (n == 0) {
    peer_sent_fin();
    return;
  }
  // Small reads again switch back to the copying way (count_read()).
  count_read(static_cast<size_t>(n));
  piped_ = static_cast<uint32_t>(n);
  if (!drain_pipe()) return;
  if (echo.on_echo) echo.on_echo(self, static_cast<size_t>(n), /*in_kernel=*/true);
  if (state() == State::disconnected) return;
  if (piped_ > 0) {
    channel_.enable_writing();
    hold_under_mark(0);  // the output was empty before this read
    return;
  }
  release_idle_pipe();
  after_send();
}

// A connection back to small reads, or told to copy from now on, gives its
// pipe back once it is empty: two descriptors and the kernel's pipe, which
// a server with many clients would otherwise hold for each one that ever
// sent in bulk.
void TcpConnection::release_idle_pipe() {
  if (piped_ > 0 || !(channel_.receives() || echo_->no_pipe)) return;
  echo_->pipe_read.reset();
  echo_->pipe_write.reset();
}

bool TcpConnection::drain_pipe() {
  const ssize_t n = sys::splice_to_socket(echo_->pipe_read.get(), fd_.get(), piped_);
  if (n == -EAGAIN || n == -EINTR) return true;
  if (n < 0) {
    handle_close(errno_code(static_cast<int>(-n)));
    return false;
  }
  piped_ -= static_cast<uint32_t>(n);
  count_sent(static_cast<size_t>(n));
  return true;
}

// The peer will send no more: recv() returned 0, or TLS close_notify came.
// A FIN without the close_notify is still the end of what the peer sends:
// what came before it is delivered, and our replies still go out; only
// tls_truncated() tells it from a clean end.
void TcpConnection::peer_sent_fin() {
  peer_closed_ = true;
  tls_truncated_ = tls_ && tls_->session.handshake_done() && !tls_->session.peer_closed();
  reading_ = false;
  // When we close at once (below: nothing to send, nobody to tell), the
  // close unregisters the socket; otherwise stop reading and stay.
  const bool closing_now =
      !callbacks_->on_peer_closed && output_bytes() == 0 && state() == State::connected && !tls_;
  if (!closing_now) channel_.disable_reading();
  if (close_decided()) {
    // Nothing is left to say: the close on its way finishes it.
  } else if (callbacks_->on_peer_closed) {
    callbacks_->on_peer_closed(shared_from_this());
  } else {
    // Nobody wants to see the FIN: answer it with ours once the replies are
    // out. This is an I/O event, not a user's call, so no need to queue.
    State expected = State::connected;
    if (state_.compare_exchange_strong(expected, State::disconnecting)) shutdown_in_loop();
  }
  maybe_finish_shutdown();
}

// ---- TLS layer ------------------------------------------------------------

Result<void> TcpConnection::start_tls(const TlsContext& context, std::string_view server_name) {
  loop_->assert_in_loop_thread();
  assert(!tls_ && "start_tls() twice");
  if (echo_) return Error::from_errno(EOPNOTSUPP, "TLS on a connection that echoes");
  auto session = TlsSession::create(context, peer_.to_string(), server_name);
  if (!session) return session.error();
  tls_ = std::make_unique<TlsLayer>(std::move(*session));
  if (options_->handshake_timeout.count() > 0) arm_handshake_timer();
  flush_tls();  // a client's hello
  return {};
}

const TlsSession* TcpConnection::tls() const {
  return tls_ ? &tls_->session : nullptr;
}

size_t TcpConnection::tls_held_bytes() const {
  return tls_->session.held_bytes();
}

void TcpConnection::receive_tls(Buffer& wire) {
  TlsSession& session = tls_->session;
  session.feed_ciphertext(wire.peek(), wire.readable_bytes());
  wire.retrieve_all();
  const bool was_done = session.handshake_done();
  // On a failure input_ still holds what authenticated before the bad
  // record: it reaches on_message before the close, as the bytes a TCP peer
  // sent before its reset do.
  auto read = session.read_plaintext(input_);
  flush_tls();  // handshake replies, held writes, or the alert of a failure
  auto self = shared_from_this();
  if (!was_done && session.handshake_done()) {
    if (tls_->handshake_timer != 0) loop_->cancel(tls_->handshake_timer);
    tls_->handshake_timer = 0;
    // The output held for the handshake is on its way now: over the mark,
    // reading waits for it to drain (pause_for_overflow() let the
    // handshake read).
    if (queued_bytes() >= high_water_mark() && options_->overflow == OverflowPolicy::pause_reading)
      pause_for_overflow();
    if (callbacks_->on_handshake && !close_decided()) callbacks_->on_handshake(self);
    // shutdown() during the handshake waited for it (shutdown_in_loop).
    if (shutdown_asked_ && read) shutdown_in_loop();
    if (state() == State::disconnected) return;
  }
  if (input_.readable_bytes() > 0) {
    if (callbacks_->on_message && !close_decided()) {
      callbacks_->on_message(self, input_);
    } else {
      input_.retrieve_all();
    }
  }
  if (!read) {
    // The alert that tells the peer why is on its way; nothing else will be.
    input_.retrieve_all();
    handle_close(read.error().code());
    return;
  }
  input_.release_if_empty();
  if (state() == State::disconnected || !tls_ || !tls_->session.peer_closed() || peer_closed_)
    return;
  // Reading paused (on_message may have left plaintext for later): the end
  // waits behind it, as a TCP FIN waits unread, until reading resumes.
  if (!reading_) {
    held_input_ = true;
    return;
  }
  peer_sent_fin();
}

void TcpConnection::flush_tls() {
  if (!tls_->session.has_ciphertext()) return;
  if (channel_.is_writing() || output_.readable_bytes() > 0) {
    tls_->session.take_ciphertext(output_);
    return;
  }
  Buffer out;
  tls_->session.take_ciphertext(out);
  write_wire(out.peek(), out.readable_bytes(), /*check_mark=*/false);
}

void TcpConnection::arm_handshake_timer() {
  std::weak_ptr<TcpConnection> weak = weak_from_this();
  tls_->handshake_timer = loop_->run_after(options_->handshake_timeout, [weak] {
    auto self = weak.lock();
    if (!self || !self->tls_ || self->state() == State::disconnected) return;
    self->tls_->handshake_timer = 0;
    if (!self->tls_->session.handshake_done())
      self->handle_close(make_error_code(Errc::handshake_timeout));
  });
}

void TcpConnection::handle_write() {
  if (!channel_.is_writing()) return;
  // The echo's pipe first: its bytes were received before output_'s.
  if (piped_ > 0) {
    if (!drain_pipe() || piped_ > 0) return;
    release_idle_pipe();
    if (output_.readable_bytes() == 0) {
      channel_.disable_writing();
      after_send();
      return;
    }
  }
  ssize_t n = sys::send(fd_.get(), output_.peek(), output_.readable_bytes());
  if (n == -EAGAIN || n == -EINTR) return;
  if (n < 0) {
    handle_close(errno_code(static_cast<int>(-n)));
    return;
  }
  output_.retrieve(static_cast<size_t>(n));
  count_sent(static_cast<size_t>(n));
  if (output_.readable_bytes() == 0) channel_.disable_writing();
  after_send();
}

// The backend sent `n` of the bytes handed to it (write_wire()). Once all
// of them are out, what queued up behind them follows.
void TcpConnection::handle_sent(size_t n) {
  sending_ = static_cast<uint16_t>(sending_ - n);
  count_sent(n);
  if (sending_ == 0 && output_.readable_bytes() > 0) hand_over_output();
  after_send();
}

// output_'s turn: to the backend again if it takes it, else by send() once
// the socket has room.
void TcpConnection::hand_over_output() {
  const size_t taken = loop_->send_for(&channel_, output_.peek(), output_.readable_bytes());
  if (taken == 0) {
    channel_.enable_writing();
    return;
  }
  output_.retrieve(taken);
  sending_ = static_cast<uint16_t>(taken);
}

// Bytes left: reading resumes once at most half the high-water mark is
// left (with a mark of 0 or 1, once nothing is); once nothing is left, the
// write is complete and a pending shutdown goes ahead.
void TcpConnection::after_send() {
  if (paused_by_overflow_ && queued_bytes() <= high_water_mark() / 2 && !close_decided()) {
    paused_by_overflow_ = false;
    if (!peer_closed_ && !paused_by_user_) {
      reading_ = true;
      channel_.enable_reading();
      deliver_held_input();
    }
  }
  if (channel_.is_writing() || sending_ > 0) return;
  output_.release_if_empty();
  if (callbacks_->on_write_complete && output_bytes() == 0) queue_write_complete();
  if (shutdown_asked_) shutdown_in_loop();
}

// Closing always happens from an I/O event, a timer or a queued functor,
// never inside a user's call such as send(): a user iterating over its
// connections must not see one vanish mid-loop.
void TcpConnection::handle_close(std::error_code reason) {
  loop_->assert_in_loop_thread();
  if (state() == State::disconnected) return;
  state_.store(State::disconnected, std::memory_order_release);
  // A close decided earlier (close_soon()) keeps its reason: the peer's
  // FIN, handled in between, finishes a connection with nothing left to
  // send as if it closed cleanly.
  if (close_reason_) reason = close_reason_;
  if (tls_) {
    // A TLS peer may close its socket as soon as its close_notify is out
    // (TLS 1.3 allows it), so our answering close_notify can meet a closed
    // socket: still a clean close by the peer.
    const bool reset = reason == std::errc::broken_pipe || reason == std::errc::connection_reset;
    if (reset && tls_->session.peer_closed()) reason = make_error_code(Errc::peer_closed);
    if (tls_->handshake_timer != 0) loop_->cancel(tls_->handshake_timer);
    tls_->handshake_timer = 0;
  }
  close_reason_ = reason;
  close_kind_ = classify_close(reason);
  if (close_kind_ == CloseReason::tls_handshake_failed && tls_ && tls_->session.handshake_done()) {
    close_kind_ = CloseReason::tls_error;
  }
  // Out of epoll now (one epoll_ctl, not a MOD now and a DEL later); the
  // socket itself closes in connect_destroyed(), after this event.
  channel_.remove();
  if (idle_timer_ != 0) loop_->cancel(idle_timer_);
  TcpConnectionPtr guard = shared_from_this();
  if (callbacks_->on_connection) callbacks_->on_connection(guard);
  if (callbacks_->on_close) callbacks_->on_close(guard);
}

// ---- sending --------------------------------------------------------------

void TcpConnection::send(std::string_view data) {
  if (loop_->is_in_loop_thread()) {
    send_in_loop(data.data(), data.size());
    return;
  }
  send(std::string(data));
}

void TcpConnection::send(std::string&& data) {
  if (loop_->is_in_loop_thread()) {
    send_in_loop(data.data(), data.size());
    return;
  }
  loop_->queue_in_loop(
      [self = shared_from_this(), d = std::move(data)] { self->send_in_loop(d.data(), d.size()); });
}

void TcpConnection::send(Buffer& data) {
  if (loop_->is_in_loop_thread()) {
    send_in_loop(data.peek(), data.readable_bytes());
    data.retrieve_all();
    return;
  }
  send(data.retrieve_all_as_string());
}

// The output has drained: on_write_complete runs from the loop's queue,
// once for all the writes that drain before it runs (a relay cutting a
// stream into 1-byte pieces queued a task per piece: 35 MB per connection).
void TcpConnection::queue_write_complete() {
  if (write_complete_queued_) return;
  write_complete_queued_ = true;
  loop_->queue_in_loop([self = shared_from_this()] {
    self->write_complete_queued_ = false;
    // A send() after the drain, before this ran, queued more: its own
    // drain calls again.
    if (self->output_bytes() != 0) return;
    if (self->callbacks_->on_write_complete) self->callbacks_->on_write_complete(self);
  });
}

// The plain path of send_in_loop(), as it was before TLS moved inside the
// connection: one send() when nothing is queued, the mark checked only when
// bytes stay behind. The TLS path checks the mark itself, around the layer.
void TcpConnection::write_wire(const char* data, size_t len, bool check_mark) {
  size_t written = 0;
  const size_t before = queued_bytes();
  if (!channel_.is_writing() && output_.readable_bytes() == 0) {
    // The io_uring backend may take a small write to send with the loop's
    // next wait (it copies it; poller_uring.h says when); else send() now,
    // unless bytes the backend holds must go first.
    written = loop_->send_for(&channel_, data, len);
    sending_ = static_cast<uint16_t>(sending_ + written);
    // A write the backend's buffer has no room for: the bytes waiting there
    // come back and go ahead of it, by one send() now, as on epoll. Queued
    // behind the buffer, it would be dropped by a force_close() that on
    // epoll comes after it reached the kernel (poller_uring.h, "Sending").
    std::string_view held;
    if (written < len && sending_ > 0) {
      held = loop_->take_back_for(&channel_);
      sending_ = static_cast<uint16_t>(sending_ - held.size());
    }
    if (sending_ == 0 || !held.empty()) {
      ssize_t n = send_after(held, data, len);
      if (n >= 0) {
        written = static_cast<size_t>(n);
        count_sent(written);
        if (written == len && callbacks_->on_write_complete && output_bytes() == 0) {
          queue_write_complete();
        }
      } else if (n != -EAGAIN && n != -EINTR) {
        // EPIPE, ECONNRESET...: the reason surfaces through the close
        // callback; nothing more can reach the peer (no close_notify).
        write_shut_ = true;
        close_soon(errno_code(static_cast<int>(-n)));
        return;
      }
    }
  }
  if (written < len) {
    output_.append(data + written, len - written);
    // Behind the backend's send, output_ waits for it (handle_sent()).
    if (!channel_.is_writing() && sending_ == 0) channel_.enable_writing();
  }
  if (check_mark) hold_under_mark(before);
}

// send() of `data` behind `held`, bytes the backend gave back, in one call:
// how many of `data`'s bytes the socket took, or -errno. What it did not
// take of `held` waits in output_, ahead of the rest of `data`.
ssize_t TcpConnection::send_after(std::string_view held, const char* data, size_t len) {
  if (held.empty()) return sys::send(fd_.get(), data, len);
  const iovec pieces[2] = {{const_cast<char*>(held.data()), held.size()},
                           {const_cast<char*>(data), len}};
  const ssize_t n = sys::sendv(fd_.get(), pieces, 2);
  const size_t took = n > 0 ? std::min(static_cast<size_t>(n), held.size()) : 0;
  count_sent(took);
  output_.append(held.data() + took, held.size() - took);
  return n < 0 ? n : n - static_cast<ssize_t>(took);
}

void TcpConnection::send_in_loop(const char* data, size_t len) {
  loop_->assert_in_loop_thread();
  // After a close, or after our FIN, bytes can no longer reach the peer.
  if (!can_send()) return;
  if (!tls_) {
    write_wire(data, len, /*check_mark=*/true);
    return;
  }
  const size_t before = queued_bytes();
  tls_->session.write_plaintext(std::string_view(data, len));
  flush_tls();
  hold_under_mark(before);
}

// The output is at or over the mark after a write that found `before`
// queued: on the way up the user hears of it and the overflow policy acts;
// while it stays up, reading stays paused. Checking the crossing alone let
// a connection whose echo pipe already held the mark's worth read on
// without limit, every write finding the output over the mark already.
void TcpConnection::hold_under_mark(size_t before) {
  const size_t mark = high_water_mark();
  if (queued_bytes() < mark) return;
  if (before < mark) {
    check_overflow();
  } else if (options_->overflow == OverflowPolicy::pause_reading) {
    pause_for_overflow();
  }
}

void TcpConnection::check_overflow() {
  size_t queued = queued_bytes();
  if (callbacks_->on_high_water_mark) {
    loop_->queue_in_loop([self = shared_from_this(), queued] {
      if (self->callbacks_->on_high_water_mark) self->callbacks_->on_high_water_mark(self, queued);
    });
  }
  if (options_->overflow == OverflowPolicy::close) {
    // Memory stays bounded even while the user keeps sending before the
    // close runs.
    close_soon(make_error_code(Errc::high_water_mark));
    return;
  }
  pause_for_overflow();
}

// Reading stops until the output drains below half the mark (after_send()).
// Not during a TLS handshake: the output held for it drains only once the
// handshake is done, which takes the peer's messages; receive_tls() pauses
// then, if the output is still over the mark.
void TcpConnection::pause_for_overflow() {
  if (!reading_) return;
  if (tls_ && !tls_->session.handshake_done() && !tls_->session.failed()) return;
  reading_ = false;
  paused_by_overflow_ = true;
  channel_.disable_reading();
}

// ---- closing --------------------------------------------------------------

void TcpConnection::shutdown() {
  State expected = State::connected;
  if (!state_.compare_exchange_strong(expected, State::disconnecting)) return;
  loop_->queue_in_loop([self = shared_from_this()] { self->shutdown_in_loop(); });
}

void TcpConnection::shutdown_in_loop() {
  loop_->assert_in_loop_thread();
  if (state() == State::disconnected || write_shut_) return;
  // From here on, draining the output finishes the shutdown. Not from the
  // state that shutdown() sets: another thread sets it at once, while sends
  // it queued before are still on their way to this thread.
  shutdown_asked_ = true;
  if (tls_) {
    // A FIN now would cut the handshake short and lose the held writes;
    // receive_tls() comes back here once the handshake is done. Unless the
    // peer hung up: then no handshake can finish (it takes both sides'
    // messages), and nothing held can ever be sent.
    if (!tls_->session.handshake_done() && !tls_->session.failed()) {
      if (peer_closed_) handle_close(make_error_code(Errc::peer_closed));
      return;
    }
    tls_->session.shutdown();  // close_notify, once
    flush_tls();
  }
  if (channel_.is_writing() || sending_ > 0) return;  // after_send() calls again once drained
  write_shut_ = true;
  // After the peer's FIN, with nothing left to send, the close() that
  // follows sends our FIN as well as shutdown() would: save the call.
  if (!peer_closed_) {
    int rc = sys::shutdown_write(fd_.get());
    if (rc < 0 && rc != -ENOTCONN) {
      handle_close(errno_code(-rc));
      return;
    }
  }
  maybe_finish_shutdown();
}

void TcpConnection::maybe_finish_shutdown() {
  if (write_shut_ && peer_closed_ && output_.readable_bytes() == 0 && sending_ == 0 &&
      piped_ == 0) {
    handle_close(make_error_code(Errc::peer_closed));
  }
}

void TcpConnection::force_close() {
  force_close(std::make_error_code(std::errc::operation_canceled));
}

// Drops what is queued and refuses more, for a close that is on its way.
void TcpConnection::drop_output() {
  write_shut_ = true;
  output_.retrieve_all();
  piped_ = 0;
  channel_.disable_writing();
}

// A close decided in the loop's thread: nothing more goes out (but TLS's
// close_notify, unless `close_notify` is false), and `reason` stands even
// if the peer's FIN, handled first, finishes the connection.
// From here on the user hears only the close (no on_message, on_handshake
// or on_peer_closed), and connected() is false. What arrives meanwhile is
// still read, and dropped: left unread, it would turn the close into a
// reset, which may cost the peer the replies sent before it.
void TcpConnection::decide_close(std::error_code reason, bool close_notify) {
  if (!close_reason_) close_reason_ = reason;
  if (close_notify) send_close_notify();
  drop_output();
  if (!announced_) return;  // connect_established() does it once on_connection is told
  State expected = State::connected;
  state_.compare_exchange_strong(expected, State::disconnecting);
}

// A close that this side decides ends TLS with close_notify, so that the
// peer can tell it from a cut (RFC 8446, 6.1; without it `tcpkit connect`
// reports a possible truncation attack, openssl "unexpected eof"). Best
// effort and never blocking: one write of a few bytes to the non-blocking
// socket, behind what the kernel or the backend has taken. Only where the
// wire stands between records, with no output left unsent: what the close
// drops may end mid-record, and an alert behind a cut record would read to
// the peer as a forged one. A failed write closes as any failed send does.
void TcpConnection::send_close_notify() {
  if (!tls_ || write_shut_ || state() == State::disconnected) return;
  const TlsSession& session = tls_->session;
  if (!session.handshake_done() || session.failed()) return;
  if (channel_.is_writing() || output_.readable_bytes() > 0) return;
  tls_->session.shutdown();  // a no-op once sent
  flush_tls();
}

void TcpConnection::close_soon(std::error_code reason) {
  decide_close(reason);
  loop_->queue_in_loop([self = shared_from_this(), reason] { self->handle_close(reason); });
}

// In the loop's thread, a close drops the output at once, so that a send()
// after it in the same callback sends nothing. From another thread, the
// sends queued after it run after the close.
void TcpConnection::force_close(std::error_code reason) {
  if (loop_->is_in_loop_thread() && state() != State::disconnected) {
    close_soon(reason);
    return;
  }
  loop_->queue_in_loop([self = shared_from_this(), reason] { self->close_now(reason); });
}

void TcpConnection::close_now(std::error_code reason) {
  if (state() == State::disconnected) return;
  decide_close(reason);
  handle_close(reason);
}

// No close_notify: an abort is abrupt on TLS as on TCP.
void TcpConnection::abort() {
  if (loop_->is_in_loop_thread() && state() != State::disconnected) {
    decide_close(make_error_code(Errc::aborted), /*close_notify=*/false);
  }
  loop_->queue_in_loop([self = shared_from_this()] {
    if (self->state() == State::disconnected) return;
    // SO_LINGER {on, 0 s} turns close() into an abort: the kernel drops
    // what is unsent and sends RST instead of FIN (socket(7); RFC 793
    // "ABORT"). It fails only on a socket that needs no reset any more.
    (void)sys::set_linger_abort(self->fd_.get());
    self->handle_close(make_error_code(Errc::aborted));
  });
}

void TcpConnection::pause_reading() {
  loop_->run_in_loop([self = shared_from_this()] {
    if (self->state() == State::disconnected) return;
    self->paused_by_user_ = true;
    if (!self->reading_) return;
    self->reading_ = false;
    self->channel_.disable_reading();
  });
}

void TcpConnection::resume_reading() {
  loop_->run_in_loop([self = shared_from_this()] {
    // Input that waited on the pause (the idle timeout's exception) counts
    // from now, read or not yet.
    if (self->paused_by_user_) self->last_active_ = self->loop_->now();
    self->paused_by_user_ = false;
    if (self->reading_ || self->peer_closed_ || self->state() == State::disconnected ||
        self->close_decided())
      return;
    self->reading_ = true;
    self->paused_by_overflow_ = false;
    self->channel_.enable_reading();
    self->deliver_held_input();
  });
}

// ---- idle timeout ---------------------------------------------------------

void TcpConnection::keep_from_idling(bool on) {
  loop_->assert_in_loop_thread();
  kept_from_idling_ = on;
  last_active_ = loop_->now();
}

// The idle timeout in the loop clock's nanoseconds: milliseconds::max()
// (never) does not fit, and a plain conversion wraps it into the past.
std::chrono::steady_clock::duration TcpConnection::idle_limit() const {
  return detail::saturating_duration_cast<std::chrono::steady_clock::duration>(
      options_->idle_timeout);
}

// One timer per connection, re-armed lazily: a read or a send only stamps
// last_active_, and the timer, when it fires early, sleeps for the rest.
// What else is activity is looked at when it fires, as of then (so a
// connection closes one to two timeouts after the last of it):
// - bytes the peer took of what was sent since the last firing (what the
//   kernel took less what it still holds, SIOCOUTQ). A peer that reads a
//   large reply slowly frees room in the kernel's send buffer in steps (the
//   kernel takes more once a third of it has drained: megabytes on
//   loopback), and acknowledges in steps of its window too, but in smaller
//   ones;
// - input that waits while the user has paused reading (a rate limit, a
//   relay whose other side is slow), in the connection or still in the
//   kernel, or that waits to be handed back after the resume: the peer
//   sent it; its time counts from its delivery. Not a pause by the
//   overflow policy: that peer is the one not reading;
// - keep_from_idling(): bytes the user holds for the connection.
void TcpConnection::arm_idle_timer(std::chrono::steady_clock::duration delay) {
  std::weak_ptr<TcpConnection> weak = weak_from_this();
  idle_timer_ = loop_->run_after(delay, [weak] {
    auto self = weak.lock();
    if (!self || self->state() == State::disconnected) return;
    if (self->kept_from_idling_ || self->held_input_ ||
        (self->paused_by_user_ &&
         (self->input_.readable_bytes() > 0 || sys::bytes_to_read(self->fd_.get()) > 0)))
      self->last_active_ = self->loop_->now();
    // (On io_uring a send may be in the kernel's queue before its
    // completion counts it: the difference saturates at none taken.)
    const uint64_t sent = self->bytes_out_.load(std::memory_order_relaxed);
    const uint64_t taken = sent - std::min(sent, sys::bytes_not_taken_by_peer(self->fd_.get()));
    if (taken != self->taken_by_peer_) {
      self->taken_by_peer_ = taken;
      self->last_active_ = self->loop_->now();
    }
    auto idle = self->loop_->now() - self->last_active_;
    if (idle >= self->idle_limit()) {
      self->close_now(make_error_code(Errc::idle_timeout));
      return;
    }
    self->arm_idle_timer(self->idle_limit() - idle);
  });
}

}  // namespace tcpkit

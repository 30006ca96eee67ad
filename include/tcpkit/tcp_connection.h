/// \file
/// TcpConnection: one established TCP connection on an event loop.
///
/// Created by TcpServer or TcpClient, owned through shared_ptr (the one shared
/// object of the reactor: the server's map holds it, and so may callbacks and
/// users). It lives in one loop's thread. send(), shutdown(), force_close(),
/// pause_reading() and resume_reading() are safe from any thread; they
/// forward to an *_in_loop twin. Everything else belongs to the loop thread.
/// Every call, from any thread, uses the connection's loop: a pointer kept
/// past the connection's close (a chat room's member list) may be called
/// only while that loop exists. A server's I/O loops go with the server, so
/// drop such pointers before the server (or the TcpClient's loop) goes.
///
/// A connection carries bytes over its socket (TCP or Unix-domain), and may
/// carry a layer on top: start_tls() puts TLS inside the connection, after
/// which on_message receives plaintext and send() takes plaintext, while
/// backpressure, half-close, timeouts and the close reason keep working
/// across the layer — bytes a layer holds (plaintext waiting for the
/// handshake) count toward the high-water mark like bytes waiting for the
/// socket. Code above the connection never needs to know which it has.
///
/// Lifecycle: connecting -> connected -> (disconnecting) -> disconnected.
/// The peer's FIN is an event of its own (on_peer_closed): replies queued
/// after it are still delivered. shutdown() sends our FIN only once the
/// output buffer has drained, so nothing queued is lost.
#pragma once

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <typeinfo>

#include "tcpkit/buffer.h"
#include "tcpkit/callbacks.h"
#include "tcpkit/close_reason.h"
#include "tcpkit/detail/channel.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class TlsContext;
class TlsSession;

/// Whether an echo (TcpConnection::start_echo()) moves a bulk peer's bytes
/// inside the kernel, through a pipe, or copies them through the process.
enum class EchoSplice {
  /// Through the pipe for a peer on another host; one on this host gets
  /// copies. Spliced bytes reach such a peer in the pages its own sends
  /// filled, so its kernel cannot reuse them and each of its sends takes
  /// fresh pages: the peer pays more than the echo saves (bench/cpu-per-cell
  /// CONNS 65536). On this host means a loopback address, a Unix socket, or
  /// a peer whose address is the one it connected to, as a client on this
  /// host has unless it picks its source address. A client in another
  /// network namespace on this host (a container), or one bound to another
  /// of this host's addresses, looks like another host and gets the pipe.
  remote,
  always,  ///< through the pipe, whoever the peer is
  never,   ///< copies always, as an echo by on_message and send() would
};

/// What happens when the output buffer passes the high-water mark.
enum class OverflowPolicy {
  pause_reading,  ///< stop reading this peer until its output drains to half the mark
  close,          ///< drop the slow peer (Errc::high_water_mark)
};

struct ConnectionOptions {
  /// Output (bytes queued for the peer) at or over this is too much: the
  /// overflow policy acts. Reading resumes once at most half of it is left.
  /// 0 counts as 1: any byte left waiting is too much.
  size_t high_water_mark = size_t{4} * 1024 * 1024;
  OverflowPolicy overflow = OverflowPolicy::pause_reading;
  size_t max_read_per_wakeup = size_t{256} * 1024;  ///< fairness: one peer cannot starve others
  /// Closes a connection that has moved no bytes either way for this long
  /// (Errc::idle_timeout); 0: never. What counts: bytes read from the peer,
  /// bytes the kernel took for it, and bytes it took of those (acknowledged,
  /// on TCP); the last is looked at when the timeout would end, so such a
  /// connection closes one to two timeouts after it. A peer that stopped
  /// reading is idle once the kernel's buffers for it are full. One that
  /// reads a large reply slowly moves the kernel's counts in steps (tens to
  /// hundreds of kilobytes on loopback): give a timeout longer than such a
  /// step takes. A peer whose input waits while the user has paused reading
  /// (a rate limit, a relay's backpressure) is not idle: its time counts
  /// from when that input is handed back.
  std::chrono::milliseconds idle_timeout{0};
  /// A layer's handshake (TLS) must finish within this, or the connection
  /// closes with Errc::handshake_timeout; 0: no limit (the idle timeout,
  /// if any, still applies).
  std::chrono::milliseconds handshake_timeout{0};
};

class TcpConnection : public std::enable_shared_from_this<TcpConnection> {
 public:
  enum class State { connecting, connected, disconnecting, disconnected };

  /// `options` is shared by every connection of one owner (a server keeps
  /// one per client: a pointer, not a copy, each).
  TcpConnection(EventLoop* loop, uint64_t id, UniqueFd fd, const Endpoint& local,
                const Endpoint& peer, std::shared_ptr<const ConnectionOptions> options);
  ~TcpConnection();
  TcpConnection(const TcpConnection&) = delete;
  TcpConnection& operator=(const TcpConnection&) = delete;

  /// Any thread. Bytes go out in call order per thread, never interleaved.
  void send(std::string_view data);
  void send(std::string&& data);
  /// A string literal would otherwise match both overloads above.
  void send(const char* data) { send(std::string_view(data)); }
  void send(Buffer& data);  ///< moves the readable bytes out of `data`
  /// Any thread. FIN after the output drains; the connection closes once the
  /// peer has closed too. With TLS: close_notify after the output, then FIN.
  void shutdown();
  /// Any thread. Closes now, dropping queued output (reason: operation_canceled).
  /// From the loop's thread nothing sent after it goes out (what the kernel
  /// took before it still does), nothing more reaches on_message,
  /// on_handshake or on_peer_closed (what arrives meanwhile is read and
  /// dropped), and connected() is false at once (from inside on_connection,
  /// once it returns); the close callback runs from the loop's queue, never
  /// inside this call. With TLS (handshake done): close_notify, then FIN, so
  /// that the peer reads a clean end rather than a possible truncation;
  /// best effort, one non-blocking write, and only when no output is dropped
  /// (what is dropped may end mid-record: the peer then sees the FIN alone,
  /// the cut it is). The same goes for the closes the library decides: the
  /// idle timeout, the close overflow policy (whose output is over the mark,
  /// so it is a bare FIN in practice), and a server's stop.
  void force_close();
  void force_close(std::error_code reason);
  /// Any thread. Closes now with a TCP RST instead of a FIN (SO_LINGER 0):
  /// queued output is dropped and the peer's next call fails with
  /// ECONNRESET (reason: Errc::aborted). With TLS too: no close_notify, the
  /// end is abrupt on purpose (a TLS peer reports the reset).
  void abort();
  /// Any thread. Stops/starts reading from the peer (e.g. while a proxy's
  /// other side is slow). A pause holds until resume_reading(), also when
  /// it comes while the overflow policy has paused reading: the output
  /// draining to half the mark then leaves reading off.
  ///
  /// What on_message leaves in its buffer stays there while reading is
  /// paused. When reading resumes (resume_reading(), or the overflow
  /// policy's own resume), on_message is called again with it, from the
  /// loop's queue (never inside resume_reading()), before any byte read
  /// later and before on_peer_closed: a server that takes a few messages
  /// per call and pauses (a rate limit) gets the rest without the peer
  /// sending more. A partial message left there costs one call that finds
  /// it still partial. Under TLS the same goes for the plaintext, and the
  /// peer's close_notify waits behind it as a FIN does.
  void pause_reading();
  void resume_reading();
  /// Loop thread. While on, the idle timeout does not close this
  /// connection: bytes of its stream wait in the user's hands (a relay that
  /// delays or rate-limits them), as a paused reader's input waits in the
  /// connection's. From when it is turned off, its idle time counts afresh.
  void keep_from_idling(bool on);

  bool connected() const { return state_.load(std::memory_order_acquire) == State::connected; }
  bool disconnected() const {
    return state_.load(std::memory_order_acquire) == State::disconnected;
  }
  State state() const { return state_.load(std::memory_order_acquire); }
  /// Why the connection went down: Errc::peer_closed for a clean close,
  /// an errno code (connection_reset...) for errors, or a tcpkit reason.
  /// Set once the close is decided, which may come a moment before the
  /// close callback; the first reason decided is the one that stands.
  std::error_code close_reason() const { return close_reason_; }
  /// The same, sorted into the outcomes a server counts and logs.
  CloseReason close_kind() const { return close_kind_; }
  bool peer_half_closed() const { return peer_closed_; }
  /// The peer's FIN came after the TLS handshake without its close_notify:
  /// what it sent may be cut short (by an attacker on the path, or a peer
  /// that crashed), where a blocking TcpStream reports Errc::tls_truncated.
  /// The connection still takes it for the peer's FIN (on_peer_closed, our
  /// replies still go out, close reason Errc::peer_closed), so nothing
  /// received is lost; a user that must tell a cut end from a clean one
  /// asks this, from on_peer_closed on and after the close. False without
  /// TLS, before the peer's FIN, and for a FIN during the handshake.
  bool tls_truncated() const { return tls_truncated_; }
  bool is_reading() const { return reading_; }
  /// Loop thread. Whether bytes sent now can still reach the peer: false
  /// once our FIN has gone, a close is on its way (force_close(), abort(),
  /// the close overflow policy) or the connection has closed. send() drops
  /// what it is given then.
  bool can_send() const { return !write_shut_ && !disconnected(); }

  uint64_t id() const { return id_; }
  EventLoop* loop() const { return loop_; }
  const Endpoint& local_endpoint() const { return local_; }
  const Endpoint& peer_endpoint() const { return peer_; }
  /// -1 once the connection is torn down: the socket closes then, even while
  /// references to the connection remain.
  int fd() const { return fd_.get(); }
  /// Loop thread: TLS on this connection, in the role of `context` (a
  /// client verifies `server_name`, else the context's). From now on
  /// on_message carries plaintext and send() takes it; bytes that the
  /// current on_message leaves in its buffer are the layer's first bytes
  /// (so a PROXY header can be read in the clear first). A client sends its
  /// hello at once; on_handshake reports the end of the handshake, and a
  /// failed handshake closes the connection with the TLS library's reason.
  /// Send before the handshake is done: the bytes are held, and counted.
  Result<void> start_tls(const TlsContext& context, std::string_view server_name = {});
  /// Loop thread: from now on the connection sends back every byte it
  /// receives, itself, in order; on_message hears no more of them, and
  /// on_echo (if set) hears of each read sent back. Bytes that the current
  /// on_message leaves in its buffer, or that earlier calls left, go back
  /// first. A peer that sends in bulk may be echoed inside the kernel, as
  /// `splice` says: splice() moves its bytes from the socket into a pipe
  /// and from the pipe back into the socket, never copied into this process
  /// and out again (the two copies an echo costs otherwise). Sends of the
  /// user's own still take their turn behind what is being echoed;
  /// backpressure, half-close and the close reason work as with on_message.
  /// Not over TLS, whose bytes must be decrypted: an error (EOPNOTSUPP)
  /// then, and nothing changes. A later call replaces on_echo and `splice`.
  Result<void> start_echo(EchoCallback on_echo = {}, EchoSplice splice = EchoSplice::remote);
  /// Loop thread: start_echo() was called.
  bool echoing() const { return echo_ != nullptr; }
  /// Loop thread: the TLS layer (version, cipher, SNI), or null without one
  /// and once the connection is torn down.
  const TlsSession* tls() const;

  /// Loop thread: what is queued for sending at every layer (bytes held for
  /// a handshake, bytes waiting for the socket), and what was read but not
  /// consumed.
  size_t output_bytes() const {
    return output_.readable_bytes() + sending_ + piped_ + (tls_ ? tls_held_bytes() : 0);
  }
  size_t input_bytes() const { return input_.readable_bytes(); }
  /// The mark output_bytes() is held under (ConnectionOptions::high_water_mark):
  /// a writer that waits for the output to drain waits once it is passed.
  size_t high_water_mark() const { return std::max<size_t>(options_->high_water_mark, 1); }
  /// Any thread: totals so far, possibly a moment old when read from another
  /// thread (monitoring reads them while the loop keeps counting).
  uint64_t bytes_received() const { return bytes_in_.load(std::memory_order_relaxed); }
  uint64_t bytes_sent() const { return bytes_out_.load(std::memory_order_relaxed); }
  /// Memory held by this connection's buffers (capacity, not content).
  size_t buffer_capacity() const { return input_.capacity() + output_.capacity(); }

  /// A typed slot for the user's per-connection state (loop thread). Any
  /// movable type fits; context<T>() is null when the slot holds another type.
  /// Each event on the connection asks for the state's first cache line as
  /// it starts, so that a callback finds it loaded: with many connections it
  /// would be out of the cache (a type aligned to a cache line fits one).
  template <typename T>
  T& set_context(T value) {
    return share_context(std::make_shared<T>(std::move(value)));
  }
  /// The same slot holding an object (not null) that the caller shares:
  /// context<T>() is that object itself, not a copy of the pointer to it.
  template <typename T>
  T& share_context(std::shared_ptr<T> object) {
    assert(object && "share_context(nullptr)");
    T& state = *object;
    context_ = std::move(object);
    context_type_ = &typeid(T);
    return state;
  }
  template <typename T>
  T* context() {
    if (context_type_ == nullptr || *context_type_ != typeid(T)) return nullptr;
    return static_cast<T*>(context_.get());
  }

  /// Loop thread. These change this connection only: the table it shares
  /// with its server's (or client's) other connections is copied first.
  void set_on_connection(ConnectionCallback cb);
  void set_on_message(MessageCallback cb);
  void set_on_write_complete(WriteCompleteCallback cb);
  void set_on_high_water_mark(HighWaterMarkCallback cb);
  void set_on_peer_closed(PeerClosedCallback cb);
  void set_on_handshake(ConnectionCallback cb);

 private:
  // A close is on its way (force_close(), abort(), a policy): nothing more
  // is read or delivered.
  bool close_decided() const { return static_cast<bool>(close_reason_); }
  /// What the owners of connections (TcpServer, TcpClient) do through it.
  friend class ConnectionOwner;

  /// The table shared by the owner's connections, which it never modifies
  /// once handed out; null clears all.
  void set_callbacks(std::shared_ptr<const ConnectionCallbacks> callbacks);
  /// In the loop thread, once each. With `tls`, the connection starts TLS
  /// before on_connection.
  void connect_established(const TlsContext* tls = nullptr, std::string_view server_name = {});
  void connect_destroyed();

  void handle_event(unsigned mask);
  struct TlsLayer;
  struct Echo;
  void handle_read(const TcpConnectionPtr& self, bool at_end = false);
  /// A read's size and counters: bulk or small, bytes in, the time.
  void count_read(size_t n);
  void count_sent(size_t n);
  void handle_data(const TcpConnectionPtr& self, std::string_view data, bool more);
  void deliver(const TcpConnectionPtr& self, Buffer& in, bool shared);
  void deliver_held_input();
  /// Bytes for the user: on_message, or the echo (start_echo()).
  void to_user(const TcpConnectionPtr& self, Buffer& in);
  void echo_bytes(const TcpConnectionPtr& self, Buffer& in);
  /// A bulk read of an echoing connection: into its pipe and back out.
  void splice_echo(const TcpConnectionPtr& self);
  /// The pipe's bytes to the socket: false when the connection closed.
  bool drain_pipe();
  void release_idle_pipe();
  bool peer_on_this_host() const;
  void take_held_input(const TcpConnectionPtr& self);
  /// Bytes from the socket for the TLS layer: decrypts, answers, delivers.
  void receive_tls(Buffer& wire);
  /// Moves the TLS layer's output to the socket.
  void flush_tls();
  void peer_sent_fin();
  /// Writes to the socket now if nothing is queued, else queues (and, with
  /// `check_mark`, applies the high-water mark).
  void write_wire(const char* data, size_t len, bool check_mark);
  ssize_t send_after(std::string_view held, const char* data, size_t len);
  void queue_write_complete();
  void arm_handshake_timer();
  size_t tls_held_bytes() const;
  void park_until_resumed();
  void handle_write();
  void handle_sent(size_t n);
  /// output_bytes() less what the backend is sending: the bytes the
  /// high-water mark holds, the same on every backend (the backend's are
  /// on their way, as bytes a send() took are).
  size_t queued_bytes() const { return output_bytes() - sending_; }
  void hand_over_output();
  void after_send();
  void handle_close(std::error_code reason);
  void send_in_loop(const char* data, size_t len);
  void shutdown_in_loop();
  void maybe_finish_shutdown();
  void hold_under_mark(size_t before);
  void check_overflow();
  void pause_for_overflow();
  void drop_output();
  void decide_close(std::error_code reason, bool close_notify = true);
  void send_close_notify();
  void close_soon(std::error_code reason);
  /// decide_close() and handle_close() at once, from the loop's queue or a timer.
  void close_now(std::error_code reason);
  void arm_idle_timer(std::chrono::steady_clock::duration delay);
  std::chrono::steady_clock::duration idle_limit() const;

  /// What every message touches comes first, so that it spans as few cache
  /// lines as the fields allow (with a thousand connections, each event
  /// finds its connection out of the cache, and every line is a miss); what
  /// only opening and closing touch comes last. Within that order, as little
  /// padding as the fields allow (three bytes after tls_truncated_, which
  /// nothing that small at the back could fill): a server keeps one per client.
  EventLoop* loop_;
  /// Held here, not behind a pointer: one allocation and one cache line
  /// less per connection.
  Channel channel_;
  UniqueFd fd_;
  std::atomic<State> state_{State::connecting};
  bool reading_ = false;
  // on_connection has been told the connection is up: until then connected()
  // stays true whatever is decided (the callback tells up from down by it).
  bool announced_ = false;
  bool paused_by_overflow_ = false;
  /// pause_reading() asked, and no resume_reading() since: the overflow's
  /// own resume leaves reading off.
  bool paused_by_user_ = false;
  bool peer_closed_ = false;
  bool write_shut_ = false;
  /// Input waits for on_message until reading resumes: bytes handle_data()
  /// kept while not reading, what on_message left before a pause, or TLS's
  /// end behind them (deliver_held_input()).
  bool held_input_ = false;
  bool shutdown_asked_ = false;  ///< shutdown_in_loop() ran: our FIN follows the output
  /// An on_write_complete call is queued: the writes that drain meanwhile
  /// share it, so a million small sends queue one task, not a million.
  bool write_complete_queued_ = false;
  /// Reads in a row smaller than a bulk read (handle_read()).
  uint8_t small_reads_ = 0;
  static constexpr uint8_t kSmallReadsToReceive = 4;
  CloseReason close_kind_ = CloseReason::none;
  /// Bytes the backend sends for us (EventLoop::send_for, at most
  /// event::kSendMax), ahead of output_: while there are any, output_ waits
  /// for them and the channel does not wait to write. A write they leave no
  /// room for takes back those not yet on their way (write_wire()).
  uint16_t sending_ = 0;
  /// options_->max_read_per_wakeup, held here because every read asks and
  /// a client's options are its own, out of the cache with many clients on
  /// a loop. 32 bits hold every cap that matters: one read() moves less
  /// than 2 GiB.
  const uint32_t read_cap_;
  const std::shared_ptr<const ConnectionOptions> options_;
  /// Never null; shared with the other connections of the same owner.
  std::shared_ptr<const ConnectionCallbacks> callbacks_;
  /// The user's state, and its type: a shared_ptr fits here whole, where
  /// std::any would allocate a holder for it. Among the fields every event
  /// reads: handle_event() asks for the state's line through it.
  std::shared_ptr<void> context_;
  const std::type_info* context_type_ = nullptr;
  /// Null for a plain connection: one pointer is all TLS costs it.
  std::unique_ptr<TlsLayer> tls_;
  /// Null unless start_echo() was called; piped_: bytes in its pipe, on
  /// their way back to the peer, ahead of output_.
  std::unique_ptr<Echo> echo_;
  uint32_t piped_ = 0;
  /// tls_truncated(): set once, at the peer's FIN; here it fills padding.
  bool tls_truncated_ = false;
  Buffer input_;
  Buffer output_;
  /// Written by the loop thread only; atomic so that other threads may read them.
  std::atomic<uint64_t> bytes_in_{0};
  std::atomic<uint64_t> bytes_out_{0};
  EventLoop::Clock::time_point last_active_;  ///< the last read or send (idle timeout)
  uint64_t taken_by_peer_ = 0;                ///< sent bytes the peer had taken at the last check
  bool kept_from_idling_ = false;             ///< keep_from_idling()
  const uint64_t id_;
  TimerId idle_timer_ = 0;
  std::error_code close_reason_;
  const Endpoint local_;
  const Endpoint peer_;
};

}  // namespace tcpkit

/// \file
/// coro::Stream: one connection as awaitable reads and writes — the
/// tutorial's `recv`/`send` loop, at event-loop scale.
///
/// A Stream owns one TcpConnection (plain or TLS: the same calls, the layer
/// is the connection's business) from an Acceptor or connect(). It belongs
/// to the connection's loop: every call and every await is made in that
/// loop's thread, by one task at a time for reading and one for writing (a
/// second concurrent reader or writer is misuse, and aborts with a message
/// in every build). Moving a
/// Stream to a task on another loop is fine as long as only the
/// connection's loop uses it: spawn the task there.
///
/// Lifetime: destroying a Stream shuts the connection down gracefully (our
/// FIN once queued output is sent; it closes when the peer closes too);
/// close() drops it at once. When the connection goes down, by the peer,
/// force_close() or its server's stop, every task waiting on the stream
/// resumes with an Error carrying the connection's close reason. The peer's
/// FIN is not an error: reads return 0 bytes, or no line, at end of stream.
/// Only a TLS peer's FIN without its close_notify is one (the stream may
/// have been cut short on the path, TcpConnection::tls_truncated()): the
/// bytes before it are read as usual, and the read that meets the end gets
/// Errc::tls_truncated instead of the end of stream (as a blocking
/// TcpStream's recv() does).
///
/// Flow control: bytes that arrive while no task reads are kept, up to
/// kReadAhead, and reading from the socket pauses beyond that until a task
/// reads again. write_all() waits while the connection's output is over its
/// high-water mark, until it drains.
///
/// Cancellation (timeout(), or destroying the task that waits) loses no
/// byte: read_some(), read_line() and read_frame() take bytes from the
/// stream only when they complete, and a read_exact() cancelled part-way
/// puts the bytes it had taken back at the front of the stream, for the
/// next read. write_all() queues its bytes when called if the output is
/// under the high-water mark, as it is after every write_all() that
/// completed: a timeout on it stops the wait for the drain, and the bytes
/// still go. Called with the output still over the mark (the wait of an
/// earlier write was cut short), it waits for the drain first and queues
/// its bytes then: a timeout in that wait sends none of them. So the output
/// holds no more than the mark and one write, however writes time out.
///
/// The stream keeps its state in the connection's context slot
/// (TcpConnection::set_context): a connection used through a Stream leaves
/// that slot to it.
#pragma once

#include <coroutine>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "tcpkit/buffer.h"
#include "tcpkit/length_prefix_codec.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::coro {

class Stream;
namespace detail {
struct StreamState;
Stream make_stream(const TcpConnectionPtr& conn, std::shared_ptr<void> keep);
}  // namespace detail

class Stream {
 public:
  /// Bytes kept for a task that is not reading before the stream pauses reading.
  static constexpr size_t kReadAhead = size_t{256} * 1024;

  Stream() = default;
  /// Loop thread of `conn`: takes over a connected connection's callbacks
  /// (on_message, on_peer_closed, on_write_complete, on_connection) and its
  /// context slot. Acceptor and connect() do this for you; `keep` is held
  /// as long as the stream (the TcpClient behind a connect()).
  static Stream adopt(const TcpConnectionPtr& conn, std::shared_ptr<void> keep = {});
  Stream(Stream&& other) noexcept = default;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();

  bool valid() const { return conn_ != nullptr; }
  const TcpConnectionPtr& connection() const { return conn_; }
  /// The loop every call and await of this stream belongs to.
  EventLoop* loop() const { return conn_->loop(); }
  const Endpoint& peer_endpoint() const { return conn_->peer_endpoint(); }

  /// The awaitable of every read: completes once its operation can finish
  /// (bytes, a line, a frame), at end of stream, or when the connection
  /// goes down. Destroying its task while it waits unhooks it.
  template <typename Op>
  class ReadAwaiter {
   public:
    ReadAwaiter(detail::StreamState* state, Op op) : state_(state), op_(std::move(op)) {}
    ReadAwaiter(ReadAwaiter&& other) noexcept : state_(other.state_), op_(std::move(other.op_)) {}
    ~ReadAwaiter() { unhook(); }
    bool await_ready() { return op_.try_complete(*state_); }
    void await_suspend(std::coroutine_handle<> h) { wait(h, &ReadAwaiter::ready, this); }
    auto await_resume() { return op_.result(*state_); }

   private:
    static bool ready(void* self, detail::StreamState& s) {
      return static_cast<ReadAwaiter*>(self)->op_.try_complete(s);
    }
    void wait(std::coroutine_handle<> h, bool (*check)(void*, detail::StreamState&), void* self);
    void unhook();
    detail::StreamState* state_;
    Op op_;
    bool waiting_ = false;
  };

  /// What each read does with the bytes received (see the read_* calls).
  struct SomeOp {
    Buffer* out;
    char* dst;
    size_t len;
    size_t got = 0;
    bool try_complete(detail::StreamState& s);
    Result<size_t> result(detail::StreamState& s);
  };
  struct ExactOp {
    char* dst;
    size_t len;
    size_t got = 0;
    bool try_complete(detail::StreamState& s);
    Result<size_t> result(detail::StreamState& s);
    /// Cancelled before it completed: the bytes taken go back to the stream.
    void give_back(detail::StreamState& s);
  };
  /// One message through a codec (LineCodec or LengthPrefixCodec).
  template <typename Codec>
  struct CodecOp {
    const Codec* codec;
    std::optional<std::string> message;
    bool too_large = false;
    bool try_complete(detail::StreamState& s);
    Result<std::optional<std::string>> result(detail::StreamState& s);
  };
  using LineOp = CodecOp<LineCodec>;
  using FrameOp = CodecOp<LengthPrefixCodec>;

  /// The tutorial's `recv`: every byte received so far, appended to `out`;
  /// waits for at least one. Result: the count, 0 at end of stream (the
  /// peer closed its side), or the close reason when the connection went
  /// down. Loop thread.
  ReadAwaiter<SomeOp> read_some(Buffer& out);
  /// The same into `out`: at most out.size() bytes.
  ReadAwaiter<SomeOp> read_some(std::span<char> out);
  /// Exactly out.size() bytes; fewer only at end of stream (the count says
  /// how many arrived). The bytes move into `out` as they arrive, so a
  /// large read holds no more than kReadAhead in the stream; cancelled
  /// before all came, it puts those it took back in front of the stream
  /// (and `out`'s contents are unspecified). Loop thread.
  ReadAwaiter<ExactOp> read_exact(std::span<char> out);
  /// One line through `codec` (without "\n" or "\r\n"), or std::nullopt at
  /// end of stream; a last line without a newline is still a line (not at
  /// a cut TLS stream's end: Errc::tls_truncated, see above). A line
  /// over the codec's limit is an Error (Errc::line_too_long) and leaves the
  /// stream unusable; close it. `codec` must outlive the await. Loop thread.
  ReadAwaiter<LineOp> read_line(const LineCodec& codec);
  /// One length-prefixed frame through `codec`, or std::nullopt at end of
  /// stream. A frame cut short by the end of stream is an Error
  /// (Errc::peer_closed); one over the limit is Errc::frame_too_large.
  ReadAwaiter<FrameOp> read_frame(const LengthPrefixCodec& codec);

  /// Completes once write_all()'s bytes are queued and the connection's
  /// output is under its high-water mark (at once, usually). Bytes it holds
  /// until the output drains (see above) go only if it is awaited.
  class WriteAwaiter {
   public:
    explicit WriteAwaiter(detail::StreamState* state, Result<void> queued)
        : state_(state), queued_(std::move(queued)) {}
    /// Holds `bytes` back until the output is under the mark.
    WriteAwaiter(detail::StreamState* state, std::in_place_t /*hold*/, std::string bytes)
        : state_(state), held_(std::move(bytes)), holding_(true) {}
    WriteAwaiter(WriteAwaiter&& other) noexcept
        : state_(other.state_),
          queued_(std::move(other.queued_)),
          held_(std::move(other.held_)),
          holding_(std::exchange(other.holding_, false)) {}
    ~WriteAwaiter();
    bool await_ready();
    void await_suspend(std::coroutine_handle<> h);
    Result<void> await_resume();

   private:
    /// Queues the held bytes, or says why they cannot go.
    Result<void> send_held();
    detail::StreamState* state_;
    Result<void> queued_;
    std::string held_;
    bool holding_ = false;
    std::coroutine_handle<> waiting_;
  };
  /// The tutorial's `sendall`: queues `data` (written at once when the
  /// socket takes it) and, when the output passed the connection's
  /// high-water mark because the peer reads slowly, waits until it drains.
  /// When the output is over the mark already (an earlier write's wait was
  /// cut short), it keeps a copy of `data` and waits first: the bytes go
  /// once the output is under the mark, and not at all if the await is
  /// cancelled (or never made).
  /// Error: the connection is down (its close reason), or we already shut
  /// it down. Loop thread.
  WriteAwaiter write_all(std::string_view data);
  /// Moves the readable bytes of `data` out, as write_all(view) would send them.
  WriteAwaiter write_all(Buffer& data);
  /// Writes `line` + "\n" / a length-prefixed `frame`. A line holding '\n',
  /// or a frame of 4 GiB or more, is refused as LineCodec::encode() and
  /// LengthPrefixCodec::encode() refuse it: nothing is sent, and the result
  /// is that error.
  WriteAwaiter write_line(std::string_view line);
  WriteAwaiter write_frame(std::string_view frame);

  /// Our FIN once queued output is sent; reads go on until the peer's FIN.
  void shutdown();
  /// Closes now, dropping queued output; waiting tasks resume with an error.
  void close();
  /// The connection went down; close_reason() says why.
  bool closed() const;
  std::error_code close_reason() const { return conn_->close_reason(); }

 private:
  friend Stream detail::make_stream(const TcpConnectionPtr& conn, std::shared_ptr<void> keep);
  Stream(TcpConnectionPtr conn, detail::StreamState* state, std::shared_ptr<void> keep)
      : conn_(std::move(conn)), state_(state), keep_(std::move(keep)) {}
  void release();

  TcpConnectionPtr conn_;
  detail::StreamState* state_ = nullptr;  ///< in conn_'s context slot
  std::shared_ptr<void> keep_;
};

namespace detail {

/// What a connection used through a Stream keeps in its context slot: the
/// bytes no task has read yet, and the tasks waiting on it. Loop thread.
struct StreamState {
  Buffer input;
  bool eof = false;        ///< the peer's FIN arrived
  bool closed = false;     ///< the connection is down
  bool paused = false;     ///< we paused reading: kReadAhead bytes wait
  bool abandoned = false;  ///< the Stream is gone; what arrives is dropped
  bool shut = false;       ///< Stream::shutdown() or close() was called
  std::coroutine_handle<> reader;
  bool (*reader_ready)(void*, StreamState&) = nullptr;
  void* reader_op = nullptr;
  std::coroutine_handle<> writer;
  TcpConnection* conn = nullptr;
  /// What owned the connection for a Stream that is gone (its TcpClient,
  /// which closes the connection as it goes): kept until the output drains.
  std::shared_ptr<void> keep;

  /// An error for a read or write on a connection that went down.
  Error down_error(const char* what) const;
};

/// A second task reading (or writing) one Stream while the first waits:
/// misuse, which would leave one of them waiting for ever. Prints what and
/// aborts, in every build.
[[noreturn]] void abort_second_task(const char* doing);

}  // namespace detail

template <typename Op>
void Stream::ReadAwaiter<Op>::wait(std::coroutine_handle<> h,
                                   bool (*check)(void*, detail::StreamState&), void* self) {
  if (state_->reader) detail::abort_second_task("reading");
  state_->reader = h;
  state_->reader_ready = check;
  state_->reader_op = self;
  waiting_ = true;
  if (state_->paused) {
    state_->paused = false;
    state_->conn->resume_reading();
  }
}

template <typename Op>
void Stream::ReadAwaiter<Op>::unhook() {
  if (!waiting_) return;
  waiting_ = false;
  // Not the stream's reader any more: it completed, and what it read is the
  // caller's. Still the reader: it is cancelled, and gives back what it took.
  if (state_->reader_op != this) return;
  state_->reader = {};
  state_->reader_ready = nullptr;
  state_->reader_op = nullptr;
  if constexpr (requires { op_.give_back(*state_); }) op_.give_back(*state_);
}

}  // namespace tcpkit::coro

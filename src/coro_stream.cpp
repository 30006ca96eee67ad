#include "tcpkit/coro_stream.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "connection_owner.h"
#include "coro_stream_hooks.h"
#include "fatal.h"
#include "tcpkit/coro_task.h"

namespace tcpkit::coro {
namespace detail {
namespace {

StreamState* state_of(const TcpConnectionPtr& conn) {
  return conn->context<StreamState>();
}

// Resumes the waiting reader if its operation can now finish; the check
// does the operation's work (moves the bytes, cuts the line) first.
void wake_reader(StreamState& s) {
  if (!s.reader || !s.reader_ready(s.reader_op, s)) return;
  auto h = std::exchange(s.reader, {});
  s.reader_ready = nullptr;
  s.reader_op = nullptr;
  h.resume();
}

// A write-complete queued before the last write was queued itself may
// arrive with the output over the mark again: the writer waits on.
void wake_writer(StreamState& s) {
  if (!s.writer) return;
  if (!s.closed && s.conn->output_bytes() >= s.conn->high_water_mark()) return;
  std::exchange(s.writer, {}).resume();
}

// Nobody reads (or what is read waits for more than is here): stop taking
// bytes from the socket once enough wait, so the peer feels it.
void pause_if_full(StreamState& s) {
  if (s.reader || s.paused || s.closed || s.input.readable_bytes() < Stream::kReadAhead) return;
  s.paused = true;
  s.conn->pause_reading();
}

// The peer's FIN is the clean end, unless a TLS peer sent it without its
// close_notify: then what came may be cut short (by an attacker on the
// path), and the end is an error, as a blocking TcpStream reports it.
bool ended_cleanly(const StreamState& s) {
  if (s.conn->tls_truncated()) return false;
  return s.eof || (s.closed && s.conn->close_reason() == Errc::peer_closed);
}

// Why a read ended without its result: the connection went down, or a TLS
// stream was cut.
Error read_end_error(const StreamState& s, const char* what) {
  if (s.conn->tls_truncated()) {
    return Error(Errc::tls_truncated, std::string(what) + " " +
                                          s.conn->peer_endpoint().to_string() +
                                          ": the TLS peer ended without close_notify");
  }
  return s.down_error(what);
}

}  // namespace

Error StreamState::down_error(const char* what) const {
  std::error_code reason = conn->close_reason();
  if (!reason) reason = std::make_error_code(std::errc::not_connected);
  return Error(reason, std::string(what) + " " + conn->peer_endpoint().to_string());
}

// The task that reads runs from here, inside the connection's read event,
// until it waits again: an echo's reply goes out in the same wake-up.
void on_stream_message(const TcpConnectionPtr& conn, Buffer& in) {
  StreamState* s = state_of(conn);
  if (s == nullptr || s->abandoned) {
    in.retrieve_all();
    return;
  }
  s->input.append(in.peek(), in.readable_bytes());
  in.retrieve_all();
  wake_reader(*s);
  pause_if_full(*s);
}

void on_stream_peer_closed(const TcpConnectionPtr& conn) {
  StreamState* s = state_of(conn);
  if (s == nullptr) return;
  s->eof = true;
  if (s->abandoned) {
    // Nobody will read or write any more: finish the close.
    conn->shutdown();
    return;
  }
  wake_reader(*s);
}

void on_stream_write_complete(const TcpConnectionPtr& conn) {
  StreamState* s = state_of(conn);
  if (s == nullptr) return;
  // The FIN of an abandoned stream is on its way: its owner may go.
  if (s->abandoned) s->keep.reset();
  wake_writer(*s);
}

void on_stream_down(const TcpConnectionPtr& conn) {
  StreamState* s = state_of(conn);
  if (s == nullptr) return;
  s->closed = true;
  conn->loop()->queue_in_loop([conn] {
    StreamState* st = state_of(conn);
    st->keep.reset();
    wake_reader(*st);
    wake_writer(*st);  // re-read: the reader's task may have ended the writer's
  });
}

void abort_second_task(const char* doing) {
  tcpkit::detail::fatal("two tasks %s one coro::Stream at once", doing);
}

void attach_stream_state(const TcpConnectionPtr& conn) {
  conn->loop()->assert_in_loop_thread();
  StreamState& s = conn->set_context(StreamState{});
  s.conn = conn.get();
  s.closed = conn->disconnected();
  s.eof = conn->peer_half_closed();
}

Stream make_stream(const TcpConnectionPtr& conn, std::shared_ptr<void> keep) {
  StreamState* s = state_of(conn);
  assert(s != nullptr && "make_stream() before attach_stream_state()");
  return Stream(conn, s, std::move(keep));
}

}  // namespace detail

// ---- the stream -------------------------------------------------------------

Stream Stream::adopt(const TcpConnectionPtr& conn, std::shared_ptr<void> keep) {
  detail::install_stream_callbacks(*conn);
  conn->set_on_connection([](const TcpConnectionPtr& c) {
    if (c->disconnected()) detail::on_stream_down(c);
  });
  detail::attach_stream_state(conn);
  return detail::make_stream(conn, std::move(keep));
}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    release();
    conn_ = std::move(other.conn_);
    state_ = std::exchange(other.state_, nullptr);
    keep_ = std::move(other.keep_);
  }
  return *this;
}

Stream::~Stream() {
  release();
}

// The stream goes; the connection finishes gracefully on its own loop.
void Stream::release() {
  if (!conn_) return;
  auto conn = std::move(conn_);
  state_ = nullptr;
  auto keep = std::move(keep_);
  conn->loop()->run_in_loop([conn, keep = std::move(keep)]() mutable {
    auto* s = conn->context<detail::StreamState>();
    s->abandoned = true;
    s->input.retrieve_all();
    s->input.release_if_empty();
    if (s->paused) {
      s->paused = false;
      conn->resume_reading();  // to see the peer's FIN
    }
    if (keep && detail::loop_closing(conn->loop())) {
      // The loop is going and will run nothing more: a client's connection
      // is torn down now, as a server does with its own in its destructor.
      ConnectionOwner::destroyed(*conn);
      return;
    }
    conn->shutdown();
    // A TcpClient behind the stream closes the connection as it goes: it
    // waits for the queued output to drain first.
    if (conn->output_bytes() > 0 && !conn->disconnected()) s->keep = std::move(keep);
  });
}

bool Stream::closed() const {
  return state_->closed;
}

void Stream::shutdown() {
  conn_->loop()->assert_in_loop_thread();
  state_->shut = true;
  conn_->shutdown();
}

void Stream::close() {
  conn_->loop()->assert_in_loop_thread();
  state_->shut = true;
  conn_->force_close();
}

// ---- reads ------------------------------------------------------------------

Stream::ReadAwaiter<Stream::SomeOp> Stream::read_some(Buffer& out) {
  conn_->loop()->assert_in_loop_thread();
  return {state_, SomeOp{&out, nullptr, 0}};
}

Stream::ReadAwaiter<Stream::SomeOp> Stream::read_some(std::span<char> out) {
  conn_->loop()->assert_in_loop_thread();
  return {state_, SomeOp{nullptr, out.data(), out.size()}};
}

Stream::ReadAwaiter<Stream::ExactOp> Stream::read_exact(std::span<char> out) {
  conn_->loop()->assert_in_loop_thread();
  return {state_, ExactOp{out.data(), out.size()}};
}

Stream::ReadAwaiter<Stream::LineOp> Stream::read_line(const LineCodec& codec) {
  conn_->loop()->assert_in_loop_thread();
  return {state_, LineOp{&codec, std::nullopt}};
}

Stream::ReadAwaiter<Stream::FrameOp> Stream::read_frame(const LengthPrefixCodec& codec) {
  conn_->loop()->assert_in_loop_thread();
  return {state_, FrameOp{&codec, std::nullopt}};
}

bool Stream::SomeOp::try_complete(detail::StreamState& s) {
  const size_t avail = s.input.readable_bytes();
  if (avail == 0) return s.eof || s.closed || (out == nullptr && len == 0);
  if (out != nullptr && out->readable_bytes() == 0) {
    // The caller's empty buffer takes the bytes whole; ours gets its storage.
    std::swap(*out, s.input);
    got = avail;
  } else if (out != nullptr) {
    out->append(s.input.peek(), avail);
    s.input.retrieve_all();
    got = avail;
  } else {
    got = std::min(avail, len);
    std::memcpy(dst, s.input.peek(), got);
    s.input.retrieve(got);
  }
  return true;
}

Result<size_t> Stream::SomeOp::result(detail::StreamState& s) {
  if (got > 0 || (out == nullptr && len == 0)) return got;
  if (detail::ended_cleanly(s)) return size_t{0};
  return detail::read_end_error(s, "read from");
}

bool Stream::ExactOp::try_complete(detail::StreamState& s) {
  const size_t n = std::min(s.input.readable_bytes(), len - got);
  std::memcpy(dst + got, s.input.peek(), n);
  s.input.retrieve(n);
  got += n;
  return got == len || s.eof || s.closed;
}

Result<size_t> Stream::ExactOp::result(detail::StreamState& s) {
  if (got == len || detail::ended_cleanly(s)) return got;
  return detail::read_end_error(s, "read from");
}

// The bytes went to the caller as they came (a large read holds no more
// than kReadAhead in the stream); a read cancelled part-way (a timeout)
// returns them, or the stream would lose them and its framing with them.
void Stream::ExactOp::give_back(detail::StreamState& s) {
  if (got == 0 || s.abandoned) return;
  s.input.prepend(dst, std::exchange(got, 0));
  detail::pause_if_full(s);
}

template <typename Codec>
bool Stream::CodecOp<Codec>::try_complete(detail::StreamState& s) {
  std::string text;
  switch (codec->decode(s.input, &text)) {
    case DecodeResult::frame:
      message = std::move(text);
      return true;
    case DecodeResult::too_large:
      too_large = true;
      return true;
    case DecodeResult::need_more:
      break;
  }
  if constexpr (std::is_same_v<Codec, LineCodec>) {
    if (s.eof && s.input.readable_bytes() > 0 && !s.conn->tls_truncated()) {
      // A last line without its newline is still a line (as getline() has it),
      // unless the TLS stream was cut: then it may be a part of one.
      message = s.input.retrieve_all_as_string();
      return true;
    }
  }
  return s.eof || s.closed;
}

template <typename Codec>
Result<std::optional<std::string>> Stream::CodecOp<Codec>::result(detail::StreamState& s) {
  if (too_large) return codec->too_large_error();
  if (message) return std::move(message);
  if (!detail::ended_cleanly(s)) return detail::read_end_error(s, "read a message from");
  // Only a frame can be left half-read: a partial line was the last line.
  if (s.input.readable_bytes() > 0) {
    return Error(Errc::peer_closed, "a frame cut short by the end of stream from " +
                                        s.conn->peer_endpoint().to_string());
  }
  return std::optional<std::string>{};
}

template struct Stream::CodecOp<LineCodec>;
template struct Stream::CodecOp<LengthPrefixCodec>;

// ---- writes -----------------------------------------------------------------

namespace detail {
namespace {
// Why bytes written now could not go, if they could not.
Result<void> can_write(const StreamState& s) {
  if (s.closed) return s.down_error("write to");
  if (s.shut) {
    return Error(std::make_error_code(std::errc::broken_pipe),
                 "write after shutdown to " + s.conn->peer_endpoint().to_string());
  }
  // Closed by force_close() or abort(), with the close itself still queued:
  // the bytes would go nowhere.
  if (!s.conn->can_send()) {
    return Error(std::make_error_code(std::errc::operation_canceled),
                 "write to " + s.conn->peer_endpoint().to_string() + ": the connection is closing");
  }
  return {};
}
}  // namespace
}  // namespace detail

Stream::WriteAwaiter Stream::write_all(std::string_view data) {
  conn_->loop()->assert_in_loop_thread();
  if (auto writable = detail::can_write(*state_); !writable) return WriteAwaiter(state_, writable);
  // Still over the mark: an earlier write's wait was cut short (a
  // timeout). These bytes wait for the drain, or the output would grow by
  // one write per timeout.
  if (conn_->output_bytes() >= conn_->high_water_mark()) {
    return WriteAwaiter(state_, std::in_place, std::string(data));
  }
  conn_->send(data);
  return WriteAwaiter(state_, {});
}

Stream::WriteAwaiter Stream::write_all(Buffer& data) {
  auto awaiter = write_all(data.view());
  data.retrieve_all();
  return awaiter;
}

Stream::WriteAwaiter Stream::write_line(std::string_view line) {
  Buffer out;
  if (auto encoded = LineCodec::encode(line, out); !encoded)
    return WriteAwaiter(state_, encoded.error());
  return write_all(out);
}

Stream::WriteAwaiter Stream::write_frame(std::string_view frame) {
  Buffer out;
  if (auto encoded = LengthPrefixCodec::encode(frame, out); !encoded)
    return WriteAwaiter(state_, encoded.error());
  return write_all(out);
}

Stream::WriteAwaiter::~WriteAwaiter() {
  if (waiting_ && state_->writer == waiting_) state_->writer = {};
}

bool Stream::WriteAwaiter::await_ready() {
  if (!queued_ || state_->closed) return true;
  const bool under_mark = state_->conn->output_bytes() < state_->conn->high_water_mark();
  if (holding_ && under_mark) queued_ = send_held();
  return under_mark;
}

Result<void> Stream::WriteAwaiter::send_held() {
  holding_ = false;
  auto writable = detail::can_write(*state_);
  if (writable) state_->conn->send(std::exchange(held_, {}));
  return writable;
}

void Stream::WriteAwaiter::await_suspend(std::coroutine_handle<> h) {
  if (state_->writer) detail::abort_second_task("writing");
  state_->writer = h;
  waiting_ = h;
}

Result<void> Stream::WriteAwaiter::await_resume() {
  if (!queued_) return queued_;
  // Woken by the close rather than the drain: the bytes may not have gone.
  const bool waited = static_cast<bool>(std::exchange(waiting_, {}));
  if (waited && state_->closed) return state_->down_error("write to");
  // Held until the drain, which has come: they go now.
  if (holding_) return send_held();
  return {};
}

}  // namespace tcpkit::coro

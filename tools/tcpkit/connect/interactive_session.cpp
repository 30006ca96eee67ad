// `tcpkit connect` without --send: an interactive session like nc. One
// wait (TcpStream::wait) watches stdin and the socket. What stdin gives is queued and sent
// without blocking, and stdin is read again only when the queue is empty, so
// a peer that stops reading slows the input down instead of deadlocking a
// session that must also keep printing what the peer sends. With --tls the
// stream encrypts; its ciphertext not yet sent counts as queued output.
// The peer's FIN ends only its direction: like nc -N, the session goes on
// sending stdin until it ends, then sends its own FIN and exits.
// With a wire encoding other than UTF-8, stdin must be UTF-8 that the
// encoding can write, as a --send text must (see refuse_input()).
// --wait counts from stdin's end; --idle-timeout from the last byte that went
// either way, so a peer that neither talks nor reads cannot hold the session.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <utility>

#include "commands.h"
#include "common/cli_common.h"
#include "common/text_escape.h"
#include "connect/session.h"

namespace tcpkit::cli {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadSize = size_t{64} * 1024;

class InteractiveSession {
 public:
  InteractiveSession(TcpStream& stream, SessionContext& context)
      : stream_(stream), context_(context), buffer_(kReadSize) {
    if (!context_.encoder) return;
    if (auto checker = Transcoder::open("UTF-8", context_.options.encoding))
      checker_.emplace(std::move(*checker));
  }

  int run();

 private:
  std::chrono::milliseconds poll_timeout() const;
  std::optional<Clock::time_point> idle_deadline() const;
  // --wait has passed since stdin's end: done, or an error if not all is sent.
  int wait_passed() const;
  bool output_queued() const { return !output_.empty() || stream_.has_pending_output(); }
  std::optional<int> on_socket_readable();
  // With --line: how much of `received` comes before a peer's line over
  // --max-line (all of it when there is none).
  size_t peer_lines_allowed(std::string_view received);
  int peer_line_too_long() const;
  std::optional<int> on_peer_finished();
  // Stdout could not be written; an exit code unless the session goes on.
  std::optional<int> on_stdout_failed();
  int connection_lost(std::error_code error) const;
  std::optional<int> on_stdin_readable();
  // Queues `text` for sending; with --line, whole lines only. An exit code
  // when a line is over --max-line.
  std::optional<int> queue_input(std::string_view text);
  int line_too_long() const;
  // Appends `text`, converted from UTF-8 to the session's encoding, to
  // output_; holds the start of a character that the next read completes,
  // unless `at_end`. Text the encoding cannot carry is refused instead.
  void encode(std::string_view text, bool at_end = false);
  // `text` (whole characters) holds bytes that are not UTF-8 or a character
  // the encoding lacks: sends the lines before it, reports, and ends the input.
  void refuse_input(std::string_view text);
  void queue_end_of_input();
  std::optional<int> flush_output();
  std::optional<int> finish_input();

  TcpStream& stream_;
  SessionContext& context_;
  std::vector<char> buffer_;
  // Encoded bytes the stream has not taken yet.
  std::string output_;
  // --line: stdin text after its last newline, sent once the line is whole.
  std::string partial_line_;
  // With an encoder: fed what the encoder is about to get, to find text it
  // could only send as the text of an escape before anything of it is sent.
  std::optional<Transcoder> checker_;
  // The start of a UTF-8 character whose rest the next read brings.
  std::string held_;
  // Encoded so far: stdin's newlines, and the bytes of the line after the last one.
  size_t lines_encoded_ = 0;
  size_t line_bytes_encoded_ = 0;
  // --line: the peer's bytes after its last newline, and whether the last is '\r'.
  size_t peer_line_bytes_ = 0;
  bool peer_line_ends_cr_ = false;
  // Stdin held text that could not be encoded: exit 1 once the lines
  // before it are sent.
  bool input_refused_ = false;
  bool stdin_open_ = true;
  bool input_finished_ = false;
  // The peer has sent its FIN: nothing more to read, stdin still to send.
  bool peer_finished_ = false;
  // The last wait found stdin readable too, not read yet.
  bool stdin_ready_ = false;
  // Stdout's reader went away; piped stdin is still being sent.
  bool stdout_gone_ = false;
  // Set once stdin has ended and --wait is counting.
  std::optional<Clock::time_point> deadline_;
  // When a byte last went to the peer or came from it (--idle-timeout).
  Clock::time_point last_activity_ = Clock::now();
};

int InteractiveSession::run() {
  for (;;) {
    const auto now = Clock::now();
    if (deadline_ && now >= *deadline_) return wait_passed();
    if (auto idle = idle_deadline(); idle && now >= *idle)
      return idle_timed_out(stream_, *context_.idle);
    const bool read_stdin = stdin_open_ && !output_queued();
    auto ready = stream_.wait(poll_timeout(), output_queued(), read_stdin ? STDIN_FILENO : -1);
    if (!ready) {
      report(fmt::format("poll: {}", reason_text(ready.error().code())));
      return kExitFailure;
    }
    // After the peer's FIN the stream is no longer watched for reading:
    // a hangup then is the peer resetting the connection.
    if (ready->hangup) return connection_lost(stream_.pending_error());
    // The socket first: what the peer said is printed before more input goes out.
    stdin_ready_ = ready->other;
    if (ready->readable) {
      if (auto code = on_socket_readable()) return *code;
    }
    if (ready->writable) {
      if (auto code = flush_output()) return *code;
    }
    if (std::exchange(stdin_ready_, false)) {
      if (auto code = on_stdin_readable()) return *code;
    }
  }
}

std::chrono::milliseconds InteractiveSession::poll_timeout() const {
  std::optional<Clock::time_point> until = deadline_;
  if (auto idle = idle_deadline(); idle && (!until || *idle < *until)) until = idle;
  if (!until) return TcpStream::kNoTimeout;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*until - Clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

std::optional<Clock::time_point> InteractiveSession::idle_deadline() const {
  if (!context_.idle) return std::nullopt;
  return last_activity_ + *context_.idle;
}

// Stdin's end and its FIN are through: the peer had its --wait for its last
// words. Stdin not all sent by then: a peer that stopped reading.
int InteractiveSession::wait_passed() const {
  if (input_finished_) return kExitOk;
  report(fmt::format(
      "stdin ended {:g} s ago (--wait) and {} has still not taken all of it; "
      "closing the connection",
      static_cast<double>(context_.wait->count()) / 1000.0, stream_.peer_endpoint().to_string()));
  return kExitFailure;
}

std::optional<int> InteractiveSession::on_socket_readable() {
  auto n = stream_.recv(buffer_.data(), buffer_.size());
  if (!n && n.error() == std::errc::resource_unavailable_try_again) return std::nullopt;
  if (!n) {
    report(fmt::format("connection to {} lost: {}", stream_.peer_endpoint().to_string(),
                       reason_text(n.error().code())));
    return kExitFailure;
  }
  last_activity_ = Clock::now();
  auto& printer = context_.printer;
  if (*n > 0 && stdout_gone_) return std::nullopt;  // nobody reads it
  if (*n > 0) {
    std::string_view received(buffer_.data(), *n);
    const size_t allowed = peer_lines_allowed(received);
    bool ok = printer.print(received.substr(0, allowed));
    if (ok && allowed < received.size()) return peer_line_too_long();
    if (ok) return std::nullopt;
    return on_stdout_failed();
  }
  return on_peer_finished();
}

// Stdout's reader went away (`| head -c 1` took what it wanted): piped
// stdin still goes to the peer, to its end, as nc -N sends it, and what the
// peer says from now on is dropped. With nothing left to send (stdin has
// ended and is out, or is a terminal) the session ends there.
std::optional<int> InteractiveSession::on_stdout_failed() {
  const int error = context_.printer.stdout_error();
  const bool sending = stdin_open_ || output_queued();
  if (error != EPIPE || input_finished_ || !sending || ::isatty(STDIN_FILENO))
    return stdout_failure(error);
  stdout_gone_ = true;
  return std::nullopt;
}

// Bytes are printed as they come, so nothing is held here; the limit is
// kept all the same, as help and man page promise and --send does.
size_t InteractiveSession::peer_lines_allowed(std::string_view received) {
  if (!context_.options.line) return received.size();
  const size_t max_line = context_.options.max_line;
  size_t line_start = 0;  // in received; the line began peer_line_bytes_ earlier
  for (size_t nl = received.find('\n'); nl != std::string_view::npos;
       nl = received.find('\n', nl + 1)) {
    size_t length = peer_line_bytes_ + (nl - line_start);
    // A "\r\n" ends the line as '\n' does; its '\r' may have come in the last read.
    const bool cr_before = nl > line_start ? received[nl - 1] == '\r' : peer_line_ends_cr_;
    if (cr_before && length > 0) --length;
    if (length > max_line) return line_start;
    peer_line_bytes_ = 0;
    peer_line_ends_cr_ = false;
    line_start = nl + 1;
  }
  const std::string_view tail = received.substr(line_start);
  if (!tail.empty()) {
    peer_line_bytes_ += tail.size();
    peer_line_ends_cr_ = tail.back() == '\r';
  }
  // An unfinished line's last '\r' may be the first half of "\r\n".
  if (peer_line_bytes_ - (peer_line_ends_cr_ ? 1 : 0) > max_line) return line_start;
  return received.size();
}

int InteractiveSession::peer_line_too_long() const {
  report(fmt::format("{} sent a line over {} bytes (--max-line); closing the connection",
                     stream_.peer_endpoint().to_string(), context_.options.max_line));
  return kExitFailure;
}

// The peer's FIN: it has said all it will say, but it may still be reading
// (a server that answers and then shuts down its side). Dropping the rest
// of piped stdin here would lose data silently, so it is still sent. A
// person at a terminal is talking to the server, not feeding it: the
// session ends there as it always did (a server that closed for good would
// otherwise leave them waiting at a prompt that goes nowhere).
std::optional<int> InteractiveSession::on_peer_finished() {
  auto& printer = context_.printer;
  // On a terminal the notice gets a line of its own; a pipe gets the bytes as sent.
  bool ok = stdout_gone_ || (printer.finish() && (!::isatty(STDOUT_FILENO) || printer.end_line()));
  if (!ok) {
    if (auto code = on_stdout_failed()) return code;
  }
  // The same wait found stdin ready: its end may be there already (the
  // FIN and the end of piped input came together), which decides the notice.
  if (std::exchange(stdin_ready_, false)) {
    if (auto code = on_stdin_readable()) return *code;
  }
  // Stdin was refused and is no longer read: the lines before the refused
  // one are still on their way, then the session ends with its failure.
  if (input_refused_) {
    if (!output_queued()) return kExitFailure;
    peer_finished_ = true;
    return std::nullopt;
  }
  if (input_finished_ || ::isatty(STDIN_FILENO)) {
    std::fputs("connection closed by peer\n", stderr);
    return kExitOk;
  }
  std::fputs("connection closed by peer for sending (FIN); still sending stdin until it ends\n",
             stderr);
  peer_finished_ = true;
  return std::nullopt;
}

// A hangup whose error a failed send already took reads as the reset it was.
int InteractiveSession::connection_lost(std::error_code error) const {
  if (!error) error = std::make_error_code(std::errc::connection_reset);
  report(fmt::format("connection to {} lost: {}", stream_.peer_endpoint().to_string(),
                     reason_text(error)));
  return kExitFailure;
}

std::optional<int> InteractiveSession::on_stdin_readable() {
  ssize_t n = ::read(STDIN_FILENO, buffer_.data(), buffer_.size());
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return std::nullopt;
  if (n < 0 && errno != EBADF) {
    report(fmt::format("cannot read stdin: {}",
                       reason_text(std::error_code(errno, std::generic_category()))));
    return kExitFailure;
  }
  // A closed stdin (EBADF, e.g. `<&-`) has nothing to send: the same as EOF.
  if (n <= 0) {
    stdin_open_ = false;
    queue_end_of_input();
    if (context_.wait && context_.wait->count() > 0) deadline_ = Clock::now() + *context_.wait;
  } else if (auto code = queue_input({buffer_.data(), static_cast<size_t>(n)})) {
    return code;
  }
  return flush_output();
}

std::optional<int> InteractiveSession::queue_input(std::string_view text) {
  if (!context_.options.line) {
    encode(text);
    return std::nullopt;
  }
  // Only the new bytes are scanned, so a long line costs linear time; each
  // line is checked against --max-line so the held part stays bounded.
  const size_t max_line = context_.options.max_line;
  size_t line_start = 0;  // in text; the line began in partial_line_
  size_t last_end = std::string_view::npos;
  for (size_t nl = text.find('\n'); nl != std::string_view::npos; nl = text.find('\n', nl + 1)) {
    size_t held = line_start == 0 ? partial_line_.size() : 0;
    if (held + line_length(text.substr(line_start), nl - line_start) > max_line) {
      return line_too_long();
    }
    line_start = nl + 1;
    last_end = nl;
  }
  if (last_end != std::string_view::npos) {
    partial_line_.append(text.substr(0, last_end + 1));
    encode(partial_line_);
    if (input_refused_) return std::nullopt;
    partial_line_.assign(text.substr(last_end + 1));
  } else {
    partial_line_.append(text);
  }
  if (line_length(partial_line_, partial_line_.size()) > max_line) return line_too_long();
  return std::nullopt;
}

// Holding a line of stdin that never ends would need unbounded memory.
int InteractiveSession::line_too_long() const {
  report(fmt::format("a line of stdin is over {} bytes (--max-line); it was not sent",
                     context_.options.max_line));
  return kExitFailure;
}

void InteractiveSession::encode(std::string_view text, bool at_end) {
  if (!context_.encoder) {
    output_.append(text);
    return;
  }
  // The checker and the encoder get whole characters, so that a bad one is
  // found in the text that holds it.
  std::string whole = std::exchange(held_, {});
  whole.append(text);
  if (!at_end) {
    held_ = whole.substr(whole.size() - incomplete_utf8_tail(whole));
    whole.resize(whole.size() - held_.size());
  }
  // A character that stdin's end cut short would stay held in the checker.
  if (at_end && incomplete_utf8_tail(whole) > 0) {
    refuse_input(whole);
    return;
  }
  if (checker_) {
    const size_t before = checker_->invalid_bytes();
    checker_->feed(whole);
    if (checker_->invalid_bytes() != before) {
      refuse_input(whole);
      return;
    }
  }
  context_.encoder->feed(whole, &output_);
  const size_t last_newline = whole.rfind('\n');
  if (last_newline == std::string::npos) {
    line_bytes_encoded_ += whole.size();
    return;
  }
  lines_encoded_ += static_cast<size_t>(std::count(whole.begin(), whole.end(), '\n'));
  line_bytes_encoded_ = whole.size() - last_newline - 1;
}

// What the transcoder cannot write it would send as the text of its escape
// ("\xF0\x9F\x98\x80"), which the peer cannot tell from text typed so. As
// with --send, such text is not sent: the lines before it go out, its line
// and the rest of stdin do not (without --line, a part of the line that an
// earlier read brought has gone out already), and the exit status is 1.
void InteractiveSession::refuse_input(std::string_view text) {
  const auto bad = find_unsendable(text, context_.options.encoding);
  const size_t at = bad ? bad->offset : text.size();
  std::string what;
  if (!bad) {
    what = fmt::format("text has no form in {}", context_.encoder->to());
  } else if (bad->kind == UnsendableCharacter::Kind::not_utf8) {
    what = fmt::format("byte 0x{:02X} is not UTF-8", static_cast<unsigned char>(text[at]));
  } else {
    what = fmt::format("'{}' has no form in {}", printable(text.substr(at, bad->length)),
                       context_.encoder->to());
  }
  const std::string_view before = text.substr(0, at);
  const size_t newline = before.rfind('\n');
  const size_t line_start = newline == std::string_view::npos ? 0 : newline + 1;
  const size_t line =
      lines_encoded_ + static_cast<size_t>(std::count(before.begin(), before.end(), '\n')) + 1;
  const size_t byte = (line_start == 0 ? line_bytes_encoded_ : 0) + (at - line_start) + 1;
  context_.encoder->feed(text.substr(0, line_start), &output_);
  context_.encoder->finish(&output_);
  report(
      fmt::format("stdin line {}: {} (byte {} of the line); that line and the rest of stdin "
                  "were not sent",
                  line, what, byte));
  input_refused_ = true;
  stdin_open_ = false;
  partial_line_.clear();
  held_.clear();
}

void InteractiveSession::queue_end_of_input() {
  // The last line may lack its newline; --line promises every line ends with one.
  std::string last = std::exchange(partial_line_, {});
  if (!last.empty()) last += '\n';
  // A character that stdin's end cut short is refused here.
  encode(last, /*at_end=*/true);
  if (context_.encoder && !input_refused_) context_.encoder->finish(&output_);
}

std::optional<int> InteractiveSession::flush_output() {
  auto failed = [this](const Error& error) {
    report(fmt::format("cannot send to {}: {}", stream_.peer_endpoint().to_string(),
                       reason_text(error.code())));
    return kExitFailure;
  };
  const bool had_pending = stream_.has_pending_output();
  if (auto flushed = stream_.flush_pending(); !flushed) return failed(flushed.error());
  if (had_pending && !stream_.has_pending_output()) last_activity_ = Clock::now();
  while (!output_.empty()) {
    auto n = stream_.send_some(output_);
    if (!n) return failed(n.error());
    if (*n == 0) return std::nullopt;  // the kernel is full: wait for POLLOUT
    output_.erase(0, *n);
    last_activity_ = Clock::now();
  }
  if (stream_.has_pending_output()) return std::nullopt;
  if (input_refused_) return kExitFailure;
  if (!stdin_open_ && !input_finished_) return finish_input();
  return std::nullopt;
}

// Stdin has ended and every byte of it is with the kernel: send FIN (the
// half-close of nc -N; with TLS, close_notify first), then wait for the
// peer's last words.
std::optional<int> InteractiveSession::finish_input() {
  input_finished_ = true;
  if (context_.options.shutdown_after_eof) {
    if (auto shut = stream_.shutdown_write(); !shut) {
      report(fmt::format("cannot half-close the connection to {}: {}",
                         stream_.peer_endpoint().to_string(), reason_text(shut.error().code())));
      return kExitFailure;
    }
  }
  // The peer has finished too, or nobody reads what it says: nothing is
  // left to wait for.
  if (peer_finished_ || stdout_gone_) return kExitOk;
  // --wait counts from stdin's end (on_stdin_readable()); 0: no waiting.
  if (context_.wait && context_.wait->count() == 0) return kExitOk;
  return std::nullopt;
}

}  // namespace

int run_interactive_session(TcpStream& stream, SessionContext& context) {
  return InteractiveSession(stream, context).run();
}

}  // namespace tcpkit::cli

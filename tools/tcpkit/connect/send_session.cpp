#include "connect/session.h"

#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>

#include "commands.h"

namespace tcpkit::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Without --line, a reply is "what arrives until the peer pauses": TCP keeps
// no message boundaries, so a short silence after the first bytes is the
// best sign that the server has said all it meant to say for now.
constexpr std::chrono::milliseconds kQuietPeriod{300};
constexpr size_t kReadSize = size_t{64} * 1024;

// Milliseconds for poll(): -1 without a deadline, never negative with one.
int poll_timeout(std::optional<Clock::time_point> deadline) {
  if (!deadline) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
  return static_cast<int>(std::max<long long>(0, left.count()));
}

bool passed(std::optional<Clock::time_point> deadline) {
  return deadline && Clock::now() >= *deadline;
}

std::string format_seconds(std::chrono::milliseconds ms) {
  return fmt::format("{:g} s", static_cast<double>(ms.count()) / 1000.0);
}

// The tutorial's client, one step per call: send a text, receive its reply.
class SendSession {
 public:
  SendSession(TcpStream& stream, SessionContext& context)
      : stream_(stream), context_(context), buffer_(kReadSize) {}

  int run();

 private:
  // idle: nothing came for --idle-timeout (reported).
  enum class Reply { received, none, peer_closed, failed, idle };
  enum class Read { data, eof, failed };

  Result<void> send_text(const std::string& text, bool last);
  Reply await_reply();
  Reply await_quiet(std::optional<Clock::time_point> deadline);
  Reply await_line(std::optional<Clock::time_point> deadline);
  // The sooner of `deadline` (--wait) and the end of --idle-timeout.
  std::optional<Clock::time_point> sooner(std::optional<Clock::time_point> deadline) const;
  // The connection has been idle for --idle-timeout (reported once true).
  bool idle_passed();
  // Reads what the stream holds into buffer_, `n` bytes (0 when a TLS
  // record is still incomplete); eof at the end, failed after a reported error.
  Read read_some(size_t& n);
  bool print(std::string_view bytes);
  Reply peer_closed();
  Reply line_too_long();

  TcpStream& stream_;
  SessionContext& context_;
  std::vector<char> buffer_;
  // --line: bytes received after the last line printed; they begin the next reply.
  std::string leftover_;
  // How much of leftover_ is known to hold no newline: each byte is scanned once.
  size_t scanned_ = 0;
  int failure_code_ = kExitFailure;
  // When the last byte came from the peer or went to it (--idle-timeout).
  Clock::time_point last_activity_ = Clock::now();
};

int SendSession::run() {
  const auto& texts = context_.options.sends;
  const bool wait_for_replies = !context_.wait || context_.wait->count() > 0;
  // A send that the peer takes nothing of for --idle-timeout gives up.
  if (context_.idle) {
    if (auto set = stream_.set_send_timeout(*context_.idle); !set) {
      report(set.error().message());
      return kExitFailure;
    }
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    if (auto sent = send_text(texts[i], i + 1 == texts.size()); !sent) {
      const auto& error = sent.error().code();
      if (context_.idle && error == std::errc::resource_unavailable_try_again)
        return idle_timed_out(stream_, *context_.idle);
      report(fmt::format("cannot send message {} of {} to {}: {}", i + 1, texts.size(),
                         stream_.peer_endpoint().to_string(), reason_text(error)));
      return kExitFailure;
    }
    last_activity_ = Clock::now();
    if (!wait_for_replies) continue;
    switch (await_reply()) {
      case Reply::received:
        break;
      case Reply::none:
        report(
            fmt::format("no reply to message {} within {}", i + 1, format_seconds(*context_.wait)));
        break;
      case Reply::peer_closed:
        if (i + 1 == texts.size()) {
          std::fputs("connection closed by peer\n", stderr);
          return kExitOk;
        }
        report(
            fmt::format("connection closed by peer after message {} of {}; the rest were not sent",
                        i + 1, texts.size()));
        return kExitFailure;
      case Reply::failed:
        return failure_code_;
      case Reply::idle:
        return idle_timed_out(stream_, *context_.idle);
    }
  }
  // Closing now, as the tutorial's client does: the server reads EOF.
  return kExitOk;
}

// The texts are one stream in the encoding: finish() after each would start
// a new one, and UTF-16 would put a byte order mark before every text. The
// last one ends the stream (a stateful encoding such as ISO-2022-JP returns
// to its initial state there; before, with the next text's ASCII, such as
// the newline of --line).
Result<void> SendSession::send_text(const std::string& text, bool last) {
  std::string payload = text;
  if (context_.options.line) payload += '\n';
  if (!context_.encoder) return stream_.send_all(payload);
  std::string encoded = context_.encoder->feed(payload);
  if (last) encoded += context_.encoder->finish();
  return stream_.send_all(encoded);
}

SendSession::Reply SendSession::await_reply() {
  std::optional<Clock::time_point> deadline;
  if (context_.wait) deadline = Clock::now() + *context_.wait;
  Reply reply = context_.options.line ? await_line(deadline) : await_quiet(deadline);
  if ((reply == Reply::received || reply == Reply::idle) && !context_.printer.end_line()) {
    failure_code_ = stdout_failure(context_.printer.stdout_error());
    return Reply::failed;
  }
  return reply;
}

std::optional<Clock::time_point> SendSession::sooner(
    std::optional<Clock::time_point> deadline) const {
  if (!context_.idle) return deadline;
  const auto idle_end = last_activity_ + *context_.idle;
  return deadline && *deadline < idle_end ? deadline : idle_end;
}

bool SendSession::idle_passed() {
  return context_.idle && Clock::now() >= last_activity_ + *context_.idle;
}

SendSession::Reply SendSession::await_quiet(std::optional<Clock::time_point> deadline) {
  bool got_any = false;
  for (;;) {
    if (passed(deadline)) return got_any ? Reply::received : Reply::none;
    if (idle_passed()) return got_any ? Reply::received : Reply::idle;
    int timeout_ms = poll_timeout(sooner(deadline));
    if (got_any && (timeout_ms < 0 || timeout_ms > kQuietPeriod.count())) {
      timeout_ms = static_cast<int>(kQuietPeriod.count());
    }
    int ready = stream_.wait_readable(timeout_ms);
    if (ready < 0) {
      report(
          fmt::format("poll: {}", reason_text(std::error_code(-ready, std::generic_category()))));
      return Reply::failed;
    }
    if (ready == 0) {
      if (got_any) return Reply::received;
      continue;  // the deadline check above decides
    }
    size_t n = 0;
    Read read = read_some(n);
    if (read == Read::failed) return Reply::failed;
    if (read == Read::eof) return peer_closed();
    if (n == 0) continue;
    if (!print({buffer_.data(), n})) return Reply::failed;
    got_any = true;
  }
}

SendSession::Reply SendSession::await_line(std::optional<Clock::time_point> deadline) {
  const size_t max_line = context_.options.max_line;
  for (;;) {
    if (auto nl = leftover_.find('\n', scanned_); nl != std::string::npos) {
      scanned_ = 0;  // what follows the newline has not been looked at yet
      if (line_length(leftover_, nl) > max_line) return line_too_long();
      bool ok = print(std::string_view(leftover_).substr(0, nl + 1));
      leftover_.erase(0, nl + 1);
      return ok ? Reply::received : Reply::failed;
    }
    scanned_ = leftover_.size();
    if (line_length(leftover_, leftover_.size()) > max_line) return line_too_long();
    if (passed(deadline) || idle_passed()) {
      const Reply none = passed(deadline) ? Reply::none : Reply::idle;
      // A partial line is still the reply the user asked to see.
      scanned_ = 0;
      if (leftover_.empty()) return none;
      bool ok = print(leftover_);
      leftover_.clear();
      if (!ok) return Reply::failed;
      return none == Reply::idle ? Reply::idle : Reply::received;
    }
    int ready = stream_.wait_readable(poll_timeout(sooner(deadline)));
    if (ready < 0) {
      report(
          fmt::format("poll: {}", reason_text(std::error_code(-ready, std::generic_category()))));
      return Reply::failed;
    }
    if (ready == 0) continue;
    size_t n = 0;
    Read read = read_some(n);
    if (read == Read::failed) return Reply::failed;
    if (read == Read::eof) return peer_closed();
    leftover_.append(buffer_.data(), n);
  }
}

SendSession::Read SendSession::read_some(size_t& n) {
  auto got = stream_.recv(buffer_.data(), buffer_.size());
  n = got ? *got : 0;
  if (n > 0) last_activity_ = Clock::now();
  if (got) return n > 0 ? Read::data : Read::eof;
  if (got.error() == std::errc::resource_unavailable_try_again) return Read::data;
  report(fmt::format("connection to {} lost: {}", stream_.peer_endpoint().to_string(),
                     reason_text(got.error().code())));
  return Read::failed;
}

bool SendSession::print(std::string_view bytes) {
  if (context_.printer.print(bytes)) return true;
  failure_code_ = stdout_failure(context_.printer.stdout_error());
  return false;
}

// Prints what arrived before the FIN, including a partial line.
SendSession::Reply SendSession::peer_closed() {
  bool ok = leftover_.empty() || print(leftover_);
  leftover_.clear();
  scanned_ = 0;
  ok = ok && context_.printer.finish() && context_.printer.end_line();
  if (!ok) {
    failure_code_ = stdout_failure(context_.printer.stdout_error());
    return Reply::failed;
  }
  return Reply::peer_closed;
}

// A peer that never ends its line would otherwise make us hold all it sends.
SendSession::Reply SendSession::line_too_long() {
  report(fmt::format("{} sent a line over {} bytes (--max-line); closing the connection",
                     stream_.peer_endpoint().to_string(), context_.options.max_line));
  failure_code_ = kExitFailure;
  return Reply::failed;
}

}  // namespace

int run_send_session(TcpStream& stream, SessionContext& context) {
  return SendSession(stream, context).run();
}

void report(std::string_view message) {
  fmt::print(stderr, "tcpkit connect: {}\n", message);
}

int idle_timed_out(const TcpStream& stream, std::chrono::milliseconds idle) {
  report(
      fmt::format("nothing sent to or received from {} for {} (--idle-timeout); closing the "
                  "connection",
                  stream.peer_endpoint().to_string(), format_seconds(idle)));
  return kExitFailure;
}

std::string reason_text(const std::error_code& code) {
  std::string text = code.message();
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

size_t line_length(std::string_view text, size_t end) {
  if (end > 0 && end < text.size() && text[end] == '\n' && text[end - 1] == '\r') return end - 1;
  // An unfinished line's last '\r' may be the first half of "\r\n".
  if (end > 0 && end == text.size() && text[end - 1] == '\r') return end - 1;
  return end;
}

int stdout_failure(int error) {
  if (error == EPIPE) return kExitOk;
  report(fmt::format("cannot write to stdout: {}",
                     reason_text(std::error_code(error, std::generic_category()))));
  return kExitFailure;
}

}  // namespace tcpkit::cli

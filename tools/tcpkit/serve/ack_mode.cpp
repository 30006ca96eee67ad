#include "serve/ack_mode.h"

#include <string>
#include <utility>

#include "common/text_escape.h"
#include "serve/serve_observer.h"
#include "serve/serve_session.h"
#include "tcpkit/buffer.h"
#include "tcpkit/length_prefix_codec.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/transcoder.h"

namespace tcpkit::cli {

AckMode::AckMode(const ServeOptions& options, ServeObserver& observer)
    : framing_(options.framing),
      max_message_(options.max_message),
      encoding_(options.encoding),
      logs_messages_(!options.quiet),
      observer_(observer) {
  // serve_cmd checked the encoding, and that it can write every character
  // of the reply.
  auto reply = Transcoder::convert("utf-8", encoding_, options.reply);
  encoded_reply_ = reply ? *reply : options.reply;
}

MessageCallback AckMode::message_callback() {
  return [this](const TcpConnectionPtr& c, Buffer& in) { on_message(c, in); };
}

void AckMode::open_session(ServeSession& session) {
  if (!logs_messages_ || Transcoder::canonical_name(encoding_) == "UTF-8") return;
  auto decoder = Transcoder::open(encoding_, "utf-8");
  if (decoder) session.decoder.emplace(std::move(*decoder));
}

void AckMode::closed(const TcpConnectionPtr& conn) {
  // A raw read that ended inside a character held its start for the next
  // read; none came. What was held goes to the log, escaped as the bytes of
  // an incomplete character it turned out to be, so no byte goes unlogged.
  ServeSession* session = conn->context<ServeSession>();
  if (framing_ != Framing::raw || session == nullptr) return;
  std::string held;
  if (session->decoder) {
    session->decoder->finish(&held);
  } else {
    held = std::exchange(session->utf8_tail, std::string());
  }
  if (held.empty()) return;
  const bool decoded = session->decoder.has_value();
  observer_.message(conn, printable(without_line_break(held), kMaxPrintableBytes,
                                    decoded ? Backslash::keep : Backslash::escape));
}

void AckMode::on_message(const TcpConnectionPtr& conn, Buffer& in) {
  ServeSession* session = conn->context<ServeSession>();
  std::string message;
  if (framing_ == Framing::raw) {
    // The tutorial's server: whatever one recv() returned is one message.
    message = in.retrieve_all_as_string();
    observer_.message_received();
    handle_message(conn, session, message);
    return;
  }
  const LineCodec line_codec(max_message_);
  const LengthPrefixCodec length_codec(max_message_);
  const bool lines = framing_ == Framing::line;
  DecodeResult result = DecodeResult::need_more;
  for (;;) {
    result = lines ? line_codec.decode(in, &message) : length_codec.decode(in, &message);
    if (result != DecodeResult::frame) break;
    observer_.message_received();
    handle_message(conn, session, message);
  }
  if (result == DecodeResult::too_large) {
    in.retrieve_all();
    conn->force_close(make_error_code(Errc::frame_too_large));
  }
}

void AckMode::handle_message(const TcpConnectionPtr& conn, ServeSession* session,
                             std::string_view message) {
  if (logs_messages_ && conn->tls() != nullptr) {
    observer_.encrypted_message(conn, message.size());
  } else if (logs_messages_) {
    std::string text = log_text(session, message, framing_ != Framing::raw);
    // A decoder's text has its backslashes doubled already (log_text), and
    // "\xHH" escapes of its own that must stay as they are.
    const bool decoded = session != nullptr && session->decoder;
    observer_.message(conn, printable(without_line_break(text), kMaxPrintableBytes,
                                      decoded ? Backslash::keep : Backslash::escape));
  }
  send_framed(conn, encoded_reply_);
}

std::string AckMode::log_text(ServeSession* session, std::string_view message, bool whole) {
  if (session == nullptr) return std::string(message);
  if (session->decoder) {
    // The decoder writes an invalid byte as the text "\xHH", which a client
    // could type too. So a backslash the client sent is doubled: the message
    // goes in up to each 0x5C byte, and where that byte came out as a
    // backslash (in an ASCII-compatible encoding it never leads a
    // character; as a trail byte it completes one) one more is written.
    std::string text;
    Transcoder& decoder = *session->decoder;
    for (size_t at = 0; at < message.size();) {
      const size_t slash = message.find('\\', at);
      const size_t next = slash == std::string_view::npos ? message.size() : slash + 1;
      decoder.feed(message.substr(at, next - at), &text);
      if (slash != std::string_view::npos && !text.empty() && text.back() == '\\') text += '\\';
      at = next;
    }
    if (whole) decoder.finish(&text);
    return text;
  }
  // UTF-8: printable() escapes what is invalid, a framed message's cut-off
  // tail too.
  if (whole) return std::string(message);
  std::string text = std::move(session->utf8_tail);
  text += message;
  session->utf8_tail = text.substr(text.size() - incomplete_utf8_tail(text));
  text.resize(text.size() - session->utf8_tail.size());
  return text;
}

void AckMode::send_framed(const TcpConnectionPtr& conn, std::string_view payload) {
  observer_.message_sent();
  switch (framing_) {
    case Framing::raw:
      conn->send(payload);
      return;
    case Framing::line: {
      std::string line(payload);
      line += '\n';
      conn->send(line);
      return;
    }
    case Framing::length: {
      // A reply is at most --max-frame bytes, far below the 4 GiB the
      // header can count; one that was not would be refused, not cut.
      Buffer out;
      if (LengthPrefixCodec::encode(payload, out)) conn->send(out.view());
      return;
    }
  }
}

}  // namespace tcpkit::cli

#include "serve/ack_mode.h"

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
  // serve_cmd validated the encoding, so converting the reply cannot fail
  // on the name; unconvertible characters come out escaped.
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
    const size_t invalid_before =
        session != nullptr && session->decoder ? session->decoder->invalid_bytes() : 0;
    std::string text = log_text(session, message);
    // A decoder that escaped bytes of this message wrote "\xHH" into the
    // text itself; doubling every backslash would garble those, so that
    // message keeps its backslashes as they are.
    const bool decoder_escaped = session != nullptr && session->decoder &&
                                 session->decoder->invalid_bytes() != invalid_before;
    observer_.message(conn, printable(text, kMaxPrintableBytes,
                                      decoder_escaped ? Backslash::keep : Backslash::escape));
  }
  send_framed(conn, encoded_reply_);
}

std::string AckMode::log_text(ServeSession* session, std::string_view message) {
  if (session == nullptr) return std::string(message);
  if (session->decoder) return session->decoder->feed(message);
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
      Buffer out;
      LengthPrefixCodec::encode(payload, out);
      conn->send(out.view());
      return;
    }
  }
}

}  // namespace tcpkit::cli

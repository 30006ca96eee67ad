// AckMode: the tutorial's server. Every message is logged (time, peer,
// text, decoded from the wire encoding) and answered with --reply, framed as
// the messages are: one per read (raw), per "\n" (line), or per 4-byte
// length prefix (length).
#pragma once

#include <string>
#include <string_view>

#include "serve/mode_handler.h"
#include "serve/serve_options.h"

namespace tcpkit::cli {

class AckMode final : public ModeHandler {
 public:
  AckMode(const ServeOptions& options, ServeObserver& observer);

  MessageCallback message_callback() override;
  // A logging server keeps each connection's decoder in its session.
  bool keeps_session() const override { return logs_messages_; }
  void open_session(ServeSession& session) override;
  // Logs the start of a character that a raw read held back for the rest.
  void closed(const TcpConnectionPtr& conn) override;

 private:
  void on_message(const TcpConnectionPtr& conn, Buffer& in);
  void handle_message(const TcpConnectionPtr& conn, ServeSession* session,
                      std::string_view message);
  // The message as UTF-8 for the log. `whole`: a framed message, decoded on
  // its own (nothing held for the next one); raw reads carry a character
  // split between them over.
  std::string log_text(ServeSession* session, std::string_view message, bool whole);
  void send_framed(const TcpConnectionPtr& conn, std::string_view payload);

  const Framing framing_;
  const size_t max_message_;
  const std::string encoding_;
  const bool logs_messages_;  // not --quiet
  ServeObserver& observer_;
  std::string encoded_reply_;  // --reply in the wire encoding
};

}  // namespace tcpkit::cli

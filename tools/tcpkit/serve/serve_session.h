// ServeSession: the per-connection state of `tcpkit serve`, kept in the
// connection's context slot, only for connections that need it (a PROXY
// header to wait for, ack messages to log, or a chat member's rate to
// keep): the idle clients of a quiet echo or ack server cost the
// connection alone.
//
// Written by the stages in the connection's loop thread; the observer reads
// it there too (the peer's name, why we closed it).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "serve/token_bucket.h"
#include "tcpkit/callbacks.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/transcoder.h"

namespace tcpkit::cli {

struct ServeSession {
  // The log's view of the messages (ack mode). A UTF-8 wire keeps its bytes,
  // so that printable() escapes invalid ones itself, unambiguously; only the
  // start of a character cut by a read waits here for the rest. Other
  // encodings go through a decoder to UTF-8.
  std::optional<Transcoder> decoder;
  std::string utf8_tail;
  // PROXY protocol: nothing is served while the header is pending, and the
  // timer closes a proxy that never completes it.
  bool proxy_pending = false;
  TimerId proxy_timer = 0;
  std::optional<Endpoint> client;  // the real client, when a PROXY header named one
  bool health_check = false;       // a v2 LOCAL header: the balancer checking on us
  // Chat's flood control (--chat-rate): what the member may still say, and
  // the timer that resumes reading it once it may say a line again (0: none).
  std::optional<TokenBucket> chat_bucket;
  TimerId chat_resume_timer = 0;
  // Closed on our initiative (a refusal, a bad PROXY header): what still
  // arrives is ignored, and these say why, for the log and the metrics.
  bool rejected = false;
  bool refusal = false;     // refused before being served, not disconnected
  std::string close_label;  // the metrics label: "bad PROXY header"
  std::string close_note;   // the log's words: "bad PROXY header (reason)"
};

// Closes a connection on our initiative; `label` counts it in the metrics,
// `note` is what its log line says.
void reject(const TcpConnectionPtr& conn, ServeSession& session, std::error_code code,
            std::string label, std::string note);
// The same for a client refused before it is served ("refused: WHY").
void refuse(const TcpConnectionPtr& conn, ServeSession& session, std::string label,
            std::string_view why);

}  // namespace tcpkit::cli

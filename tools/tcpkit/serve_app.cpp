#include "serve_app.h"

#include <fmt/core.h>

#include <optional>

#include "chat_room.h"
#include "tcpkit/buffer.h"
#include "tcpkit/length_prefix_codec.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/transcoder.h"

namespace tcpkit::cli {

const char* to_string(ServeMode mode) {
  switch (mode) {
    case ServeMode::ack: return "ack";
    case ServeMode::echo: return "echo";
    case ServeMode::discard: return "discard";
    case ServeMode::chat: return "chat";
  }
  return "?";
}

const char* to_string(Framing framing) {
  switch (framing) {
    case Framing::raw: return "raw";
    case Framing::line: return "line";
    case Framing::length: return "length";
  }
  return "?";
}

// Per-connection state, kept in the connection's context slot.
struct ServeApp::Session {
  std::optional<Transcoder> decoder;  // wire encoding -> UTF-8, for the log
};

namespace {

ServerOptions server_options(const ServeOptions& o) {
  ServerOptions so;
  so.threads = o.threads;
  so.reuse_port = o.reuse_port;
  so.max_connections = o.max_conns;
  so.connection.high_water_mark = o.high_water_mark;
  // A chat member that does not read is dropped, so one slow client cannot
  // hold everybody's lines in memory. Elsewhere the producer is the peer
  // itself, so pausing its reads bounds memory without losing bytes.
  so.connection.overflow = o.mode == ServeMode::chat ? OverflowPolicy::close : OverflowPolicy::pause_reading;
  so.connection.idle_timeout =
      std::chrono::milliseconds(static_cast<long long>(o.idle_timeout_s * 1000.0));
  return so;
}

// Text for one log line: drops a single trailing line break and escapes
// the other control characters so every event stays on one line.
std::string printable(std::string_view text) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 && c != '\t') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

ServeApp::ServeApp(EventLoop* loop, ServeOptions options)
    : loop_(loop),
      options_(std::move(options)),
      log_(options_.log_format),
      server_(loop, server_options(options_)) {
  if (options_.mode == ServeMode::chat) room_ = std::make_unique<ChatRoom>();
  // serve_cmd validated the encoding, so converting the reply cannot fail
  // on the name; unconvertible characters come out escaped.
  auto reply = Transcoder::convert("utf-8", options_.encoding, options_.reply);
  encoded_reply_ = reply ? *reply : options_.reply;
  server_.set_on_connection([this](const TcpConnectionPtr& c) { on_connection(c); });
  server_.set_on_refused([this](const Endpoint& peer, std::error_code) {
    if (!log_connections()) return;
    auto clients = static_cast<unsigned long long>(clients_.load());
    log_.log("disconnect", fmt::format("disconnect {}: refused: too many connections (clients: {})",
                                       peer.to_string(), clients),
             {Logger::str("peer", peer.to_string()), Logger::str("reason", "refused: too many connections"),
              Logger::num("clients", clients)});
  });
  switch (options_.mode) {
    case ServeMode::echo:
      server_.set_on_message([](const TcpConnectionPtr& c, Buffer& in) { c->send(in); });
      break;
    case ServeMode::discard:
      server_.set_on_message([](const TcpConnectionPtr&, Buffer& in) { in.retrieve_all(); });
      break;
    case ServeMode::ack:
    case ServeMode::chat:
      server_.set_on_message([this](const TcpConnectionPtr& c, Buffer& in) { on_message(c, in); });
      break;
  }
}

ServeApp::~ServeApp() = default;

Result<void> ServeApp::listen(const std::vector<Endpoint>& addresses) {
  for (const auto& address : addresses) {
    if (auto r = server_.listen(address); !r) return r;
  }
  return {};
}

void ServeApp::start() {
  server_.start();
  for (const auto& ep : server_.listen_endpoints()) {
    log_.log("listening",
             fmt::format("listening on {} (mode {}, framing {}, encoding {})", ep.to_string(),
                         to_string(options_.mode), to_string(options_.framing), options_.encoding),
             {Logger::str("address", ep.to_string()), Logger::str("mode", to_string(options_.mode)),
              Logger::str("framing", to_string(options_.framing)), Logger::str("encoding", options_.encoding)});
  }
}

void ServeApp::begin_stop() {
  if (stopping_.exchange(true)) return;
  size_t open = static_cast<size_t>(clients_.load());
  log_.log("stopping", fmt::format("stopping: no new connections; draining {} clients", open),
           {Logger::num("clients", open)});
  auto drain = std::chrono::milliseconds(static_cast<long long>(options_.drain_timeout_s * 1000.0));
  server_.stop(drain, [this] {
    uint64_t in = bytes_in_.load();
    uint64_t out = bytes_out_.load();
    log_.log("stopped",
             fmt::format("stopped: served {} connections, {} bytes in, {} bytes out", served_.load(), in, out),
             {Logger::num("connections", served_.load()), Logger::num("bytes_in", in),
              Logger::num("bytes_out", out)});
    loop_->quit();
  });
}

void ServeApp::on_connection(const TcpConnectionPtr& conn) {
  const std::string peer = conn->peer_endpoint().to_string();
  if (conn->connected()) {
    served_.fetch_add(1, std::memory_order_relaxed);
    Session session;
    if (options_.mode == ServeMode::ack || options_.mode == ServeMode::chat) {
      auto decoder = Transcoder::open(options_.encoding, "utf-8");
      if (decoder) session.decoder.emplace(std::move(*decoder));
    }
    conn->set_context(std::move(session));
    int64_t clients = clients_.fetch_add(1) + 1;
    if (log_connections()) {
      log_.log("connect", fmt::format("connect {} (clients: {})", peer, clients),
               {Logger::str("peer", peer), Logger::num("clients", static_cast<unsigned long long>(clients))});
    }
    if (room_) {
      size_t online = room_->join(conn, peer);
      room_->broadcast(fmt::format("* {} joined ({} online)\n", peer, online), conn);
    }
    return;
  }
  bytes_in_.fetch_add(conn->bytes_received(), std::memory_order_relaxed);
  bytes_out_.fetch_add(conn->bytes_sent(), std::memory_order_relaxed);
  if (room_) {
    std::string name = room_->leave(conn);
    if (!name.empty()) room_->broadcast(fmt::format("* {} left\n", name), conn);
  }
  int64_t clients = clients_.fetch_sub(1) - 1;
  if (!log_connections()) return;
  std::string reason = describe_reason(conn->close_reason());
  log_.log("disconnect", fmt::format("disconnect {}: {} (clients: {})", peer, reason, clients),
           {Logger::str("peer", peer), Logger::str("reason", reason), Logger::num("clients", static_cast<unsigned long long>(clients))});
}

std::string ServeApp::describe_reason(std::error_code reason) const {
  if (reason == Errc::peer_closed) return "peer closed";
  if (reason == std::errc::connection_reset) return "connection reset";
  if (reason == Errc::idle_timeout) return "idle timeout";
  if (reason == Errc::frame_too_large || reason == Errc::line_too_long) return "message too large";
  if (reason == Errc::high_water_mark) return "slow reader (output over high-water mark)";
  if (reason == std::errc::operation_canceled || reason == std::errc::timed_out) {
    if (stopping_.load()) return "server stopping";
  }
  return reason.message();
}

void ServeApp::on_message(const TcpConnectionPtr& conn, Buffer& in) {
  Session* session = conn->context<Session>();
  if (session == nullptr) {
    in.retrieve_all();
    return;
  }
  std::string message;
  DecodeResult result = DecodeResult::need_more;
  const bool lines = options_.framing == Framing::line || options_.mode == ServeMode::chat;
  if (!lines && options_.framing == Framing::raw) {
    // The tutorial's server: whatever one recv() returned is one message.
    message = in.retrieve_all_as_string();
    handle_message(conn, *session, message);
    return;
  }
  const LineCodec line_codec(options_.max_message);
  const LengthPrefixCodec length_codec(options_.max_message);
  for (;;) {
    result = lines ? line_codec.decode(in, &message) : length_codec.decode(in, &message);
    if (result != DecodeResult::frame) break;
    if (options_.mode == ServeMode::chat) {
      handle_chat_line(conn, *session, message);
    } else {
      handle_message(conn, *session, message);
    }
  }
  if (result == DecodeResult::too_large) {
    in.retrieve_all();
    conn->force_close(make_error_code(Errc::frame_too_large));
  }
}

void ServeApp::handle_message(const TcpConnectionPtr& conn, Session& session, std::string_view message) {
  if (log_connections()) {
    std::string text = session.decoder ? session.decoder->feed(message) : std::string(message);
    std::string peer = conn->peer_endpoint().to_string();
    std::string shown = printable(text);
    log_.log("message", fmt::format("message from {}: {}", peer, shown),
             {Logger::str("peer", peer), Logger::str("text", shown)});
  }
  send_framed(conn, encoded_reply_);
}

void ServeApp::handle_chat_line(const TcpConnectionPtr& conn, Session& /*session*/, std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  constexpr std::string_view kNick = "/nick ";
  if (line.substr(0, kNick.size()) == kNick) {
    std::string name(line.substr(kNick.size()));
    if (name.empty()) return;
    std::string old = room_->rename(conn, name);
    room_->broadcast(fmt::format("* {} is now known as {}\n", old, name), conn);
    return;
  }
  room_->broadcast(fmt::format("<{}> {}\n", room_->name_of(conn), line), conn);
}

void ServeApp::send_framed(const TcpConnectionPtr& conn, std::string_view payload) {
  switch (options_.framing) {
    case Framing::raw:
      conn->send(payload);
      return;
    case Framing::line: {
      std::string line(payload);
      line += '\n';
      conn->send(std::move(line));
      return;
    }
    case Framing::length: {
      Buffer out;
      LengthPrefixCodec::encode(payload, out);
      conn->send(out);
      return;
    }
  }
}

}  // namespace tcpkit::cli

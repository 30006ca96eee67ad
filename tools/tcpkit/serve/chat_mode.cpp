#include "serve/chat_mode.h"

#include <fmt/core.h>

#include "common/text_escape.h"
#include "serve/serve_observer.h"
#include "serve/serve_session.h"
#include "tcpkit/buffer.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/transcoder.h"

namespace tcpkit::cli {

ChatMode::ChatMode(const ServeOptions& options, ServeObserver& observer)
    : encoding_(options.encoding),
      utf8_(Transcoder::canonical_name(options.encoding) == "UTF-8"),
      max_message_(options.max_message),
      observer_(observer) {}

ChatMode::~ChatMode() = default;

MessageCallback ChatMode::message_callback() {
  return [this](const TcpConnectionPtr& c, Buffer& in) { on_message(c, in); };
}

namespace {

// The balancer's health check (PROXY v2 LOCAL) is no member: it joins and
// leaves every few seconds, and the room must not hear of it.
bool health_check(const TcpConnectionPtr& conn) {
  const auto* session = conn->context<ServeSession>();
  return session != nullptr && session->health_check;
}

}  // namespace

void ChatMode::admitted(const TcpConnectionPtr& conn) {
  if (health_check(conn)) return;
  const std::string peer = observer_.peer_name(conn);
  const std::vector<TcpConnectionPtr> before = room_.join(conn, peer);
  observer_.message_sent(
      ChatRoom::send_to(before, fmt::format("* {} joined ({} online)\n", peer, before.size() + 1)));
}

// The server is stopping and the member's side closes next: it hears why
// instead of a bare FIN.
void ChatMode::draining(const TcpConnectionPtr& conn) {
  draining_.store(true, std::memory_order_relaxed);
  if (room_.name_of(conn).empty()) return;  // no member (yet): a health check, a PROXY header
  const std::string text = "* server shutting down\n";
  auto notice = Transcoder::convert("utf-8", encoding_, text);
  conn->send(notice ? *notice : text);
  observer_.message_sent();
}

void ChatMode::closed(const TcpConnectionPtr& conn) {
  ChatRoom::Departure gone = room_.leave(conn);
  if (gone.name.empty()) return;
  observer_.message_sent(ChatRoom::send_to(gone.others, fmt::format("* {} left\n", gone.name)));
}

std::string ChatMode::client_name(const TcpConnectionPtr& conn) const {
  std::string name = room_.name_of(conn);
  if (encoding_ == "utf-8") return name;
  // Names are kept in the wire encoding; JSON wants UTF-8.
  auto utf8 = Transcoder::convert(encoding_, "utf-8", name);
  return utf8 ? *utf8 : name;
}

void ChatMode::join_cluster(EventLoop* loop, std::string label, std::vector<Endpoint> redis,
                            RedisAuth auth) {
  cluster_ = std::make_unique<ChatCluster>(
      loop, std::move(label), std::move(redis), std::move(auth), max_message_, observer_.log(),
      [this](std::string_view nick, std::string_view text, std::string_view instance) {
        // From Redis, so from outside: held to what a member's line may
        // carry, and shown under a name nobody else holds.
        const std::string name = room_.relayed_name(from_utf8(nick), instance);
        broadcast(fmt::format("<{}> {}\n", name, chat_text(from_utf8(text), utf8_)), nullptr);
      });
}

// Lines travel between instances in UTF-8, whatever each one's encoding;
// invalid bytes are escaped on the way, as "\xHH".
std::string ChatMode::to_utf8(std::string_view wire) const {
  auto utf8 = Transcoder::convert(encoding_, "utf-8", wire);
  return utf8 ? *utf8 : std::string(wire);
}

std::string ChatMode::from_utf8(std::string_view utf8) const {
  auto wire = Transcoder::convert("utf-8", encoding_, utf8);
  return wire ? *wire : std::string(utf8);
}

void ChatMode::start_cluster() {
  if (cluster_) cluster_->start();
}

void ChatMode::stop_cluster() {
  if (cluster_) cluster_->stop();
}

void ChatMode::on_message(const TcpConnectionPtr& conn, Buffer& in) {
  const LineCodec codec(max_message_);
  std::string line;
  DecodeResult result = DecodeResult::need_more;
  for (;;) {
    result = codec.decode(in, &line);
    if (result != DecodeResult::frame) break;
    observer_.message_received();
    handle_line(conn, line);
  }
  if (result == DecodeResult::too_large) {
    in.retrieve_all();
    // The member hears why; what the kernel took before the close still goes.
    const std::string text =
        fmt::format("* line over --max-message ({} bytes); closing\n", max_message_);
    auto notice = Transcoder::convert("utf-8", encoding_, text);
    conn->send(notice ? *notice : text);
    observer_.message_sent();
    conn->force_close(make_error_code(Errc::frame_too_large));
  }
}

void ChatMode::handle_line(const TcpConnectionPtr& conn, std::string_view line) {
  if (health_check(conn)) {
    // Any line is answered, so that "send ping, expect a reply" passes
    // also in an empty room; nobody else hears it.
    conn->send(std::string_view("* ok\n"));
    observer_.message_sent();
    return;
  }
  // The server is draining: members are shut down (FIN) one by one and can
  // no longer hear what is said.
  if (draining_.load(std::memory_order_relaxed)) return;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // An empty line says nothing (IRC drops it too): broadcast, every bare
  // newline cost each member a whole "<name> " line.
  if (line.empty()) return;
  constexpr std::string_view kNick = "/nick ";
  if (line.substr(0, kNick.size()) == kNick) {
    std::string name(line.substr(kNick.size()));
    if (auto problem = check_nick(name)) {
      refuse_nick(conn, *problem);
      return;
    }
    auto old = room_.rename(conn, name);
    if (!old) {
      refuse_nick(conn, "another member has that name");
      return;
    }
    // The one who asked hears it too: a client that waits for a reply
    // (connect --line --send "/nick NAME") gets one.
    conn->send(fmt::format("* you are now known as {}\n", name));
    observer_.message_sent();
    broadcast(fmt::format("* {} is now known as {}\n", *old, name), conn);
    return;
  }
  // What reaches other members' terminals carries no control characters:
  // a CR or an ESC sequence in a line could rewrite what they see (and
  // show a line under another member's name).
  const std::string name = room_.name_of(conn);
  broadcast(fmt::format("<{}> {}\n", name, chat_text(line, utf8_)), conn);
  if (cluster_) cluster_->publish(to_utf8(name), to_utf8(line));
}

// Only the one who asked hears why; the room never sees the name.
void ChatMode::refuse_nick(const TcpConnectionPtr& conn, std::string_view why) const {
  const std::string text = fmt::format("* nick refused: {}\n", why);
  auto reply = Transcoder::convert("utf-8", encoding_, text);
  conn->send(reply ? *reply : text);
}

// Nicks are kept and broadcast in the wire encoding, so they are judged in
// UTF-8 after a conversion that must not have needed a single escape.
std::optional<std::string> ChatMode::check_nick(std::string_view wire) const {
  std::string utf8(wire);
  if (Transcoder::canonical_name(encoding_) != "UTF-8") {
    auto decoder = Transcoder::open(encoding_, "utf-8");
    if (!decoder) return "the server cannot read its own encoding";
    utf8 = decoder->feed(wire);
    utf8 += decoder->finish();
    if (decoder->invalid_bytes() > 0) return "a nick must be valid text in the server's encoding";
  }
  return nick_problem(utf8);
}

void ChatMode::broadcast(std::string_view line, const TcpConnectionPtr& except) {
  observer_.message_sent(room_.broadcast(line, except));
}

}  // namespace tcpkit::cli

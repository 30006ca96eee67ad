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
      rate_(options.chat_rate),
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

// The member's resume timer, if one is armed, will not run (the member is
// gone, or the server drains and reads it at once).
void release(const TcpConnectionPtr& conn, ServeSession& session) {
  if (session.chat_resume_timer == 0) return;
  conn->loop()->cancel(session.chat_resume_timer);
  session.chat_resume_timer = 0;
}

// The name a member goes by until it takes a nick. Over TCP it is the
// address it connects from, HOST:PORT, which no other member has while it
// is connected. On a Unix socket every member has the server's path, and
// the name the log gives it ("unix:PATH (pid N, uid N)") holds spaces,
// which other instances refuse in a name (member_name_problem()), and is
// one for all the connections of one process: such a member goes by
// "unix:pidN#ID" instead, ID being the connection's id (as on the status
// page), which no other connection of this server has.
std::string default_name(const TcpConnectionPtr& conn) {
  const auto* session = conn->context<ServeSession>();
  const Endpoint& peer =
      session != nullptr && session->client ? *session->client : conn->peer_endpoint();
  if (!peer.is_unix()) return peer.to_string();
  const auto who = peer.credentials();
  return who ? fmt::format("unix:pid{}#{}", who->pid, conn->id())
             : fmt::format("unix:#{}", conn->id());
}

}  // namespace

// The burst is one second's worth: a member may paste that many lines at
// once, and from then on the room takes `rate_` a second.
void ChatMode::open_session(ServeSession& session) {
  if (rate_ > 0) session.chat_bucket.emplace(rate_, rate_);
}

void ChatMode::admitted(const TcpConnectionPtr& conn) {
  if (health_check(conn)) return;
  const std::string name = default_name(conn);
  const std::vector<TcpConnectionPtr> before = room_.join(conn, name);
  auto notice =
      pace_notice(true, fmt::format("* {} joined ({} online)\n", name, before.size() + 1));
  if (notice) observer_.message_sent(ChatRoom::send_to(before, *notice));
}

std::optional<std::string> ChatMode::pace_notice(bool joined, std::string text) {
  if (rate_ == 0) return text;
  const auto now = TokenBucket::Clock::now();
  std::lock_guard lock(notices_.mutex);
  if (!notices_.budget) notices_.budget.emplace(rate_, rate_);
  if (!notices_.budget->ready(now)) {
    ++(joined ? notices_.joined : notices_.left);
    return std::nullopt;
  }
  notices_.budget->take(1, now);
  if (notices_.joined == 0 && notices_.left == 0) return text;
  std::string held =
      fmt::format("* {} joined and {} left meanwhile\n", notices_.joined, notices_.left);
  notices_.joined = 0;
  notices_.left = 0;
  return held + text;
}

// The server is stopping and the member's side closes next: it hears why
// instead of a bare FIN.
void ChatMode::draining(const TcpConnectionPtr& conn) {
  draining_.store(true, std::memory_order_relaxed);
  // A member held back by its rate is read again, so that its end comes
  // within the drain: what it says from now on is dropped anyway.
  if (auto* session = conn->context<ServeSession>(); session && session->chat_resume_timer != 0) {
    release(conn, *session);
    conn->resume_reading();
  }
  if (room_.name_of(conn).empty()) return;  // no member (yet): a health check, a PROXY header
  const std::string text = "* server shutting down\n";
  auto notice = Transcoder::convert("utf-8", encoding_, text);
  conn->send(notice ? *notice : text);
  observer_.message_sent();
}

void ChatMode::closed(const TcpConnectionPtr& conn) {
  if (auto* session = conn->context<ServeSession>()) release(conn, *session);
  ChatRoom::Departure gone = room_.leave(conn);
  if (gone.name.empty()) return;
  auto notice = pace_notice(false, fmt::format("* {} left\n", gone.name));
  if (notice) observer_.message_sent(ChatRoom::send_to(gone.others, *notice));
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

TokenBucket* ChatMode::bucket_of(const TcpConnectionPtr& conn) const {
  if (rate_ == 0 || draining_.load(std::memory_order_relaxed)) return nullptr;
  auto* session = conn->context<ServeSession>();
  if (session == nullptr || session->health_check || !session->chat_bucket) return nullptr;
  return &*session->chat_bucket;
}

// Lines over the member's rate stay in `in`; the connection hands them
// back when reading resumes (TcpConnection::resume_reading()), and the
// kernel holds what comes after them, so that TCP slows the sender down.
void ChatMode::on_message(const TcpConnectionPtr& conn, Buffer& in) {
  const LineCodec codec(max_message_);
  TokenBucket* bucket = bucket_of(conn);
  const auto now = TokenBucket::Clock::now();
  std::string line;
  DecodeResult result = DecodeResult::need_more;
  for (;;) {
    if (bucket != nullptr && in.readable_bytes() > 0 && !bucket->ready(now)) {
      hold(conn, *conn->context<ServeSession>(), now);
      return;
    }
    result = codec.decode(in, &line);
    if (result != DecodeResult::frame) break;
    observer_.message_received();
    const size_t cost = handle_line(conn, line);
    if (bucket != nullptr) bucket->take(static_cast<double>(cost), now);
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

size_t ChatMode::handle_line(const TcpConnectionPtr& conn, std::string_view line) {
  if (health_check(conn)) {
    // Any line is answered, so that "send ping, expect a reply" passes
    // also in an empty room; nobody else hears it.
    conn->send(std::string_view("* ok\n"));
    observer_.message_sent();
    return 0;
  }
  // The server is draining: members are shut down (FIN) one by one and can
  // no longer hear what is said.
  if (draining_.load(std::memory_order_relaxed)) return 0;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // An empty line says nothing (IRC drops it too): broadcast, every bare
  // newline cost each member a whole "<name> " line.
  if (line.empty()) return 0;
  constexpr std::string_view kNick = "/nick ";
  if (line.substr(0, kNick.size()) == kNick) {
    std::string name(line.substr(kNick.size()));
    if (auto problem = check_nick(name)) {
      refuse_nick(conn, *problem);
      return 1;
    }
    auto old = room_.rename(conn, name);
    if (!old) {
      refuse_nick(conn, "another member has that name");
      return 1;
    }
    // The one who asked hears it too: a client that waits for a reply
    // (connect --line --send "/nick NAME") gets one.
    conn->send(fmt::format("* you are now known as {}\n", name));
    observer_.message_sent();
    broadcast(fmt::format("* {} is now known as {}\n", *old, name), conn);
    return 1;
  }
  // What reaches other members' terminals carries no control characters:
  // a CR or an ESC sequence in a line could rewrite what they see (and
  // show a line under another member's name).
  const std::string name = room_.name_of(conn);
  broadcast(fmt::format("<{}> {}\n", name, chat_text(line, utf8_)), conn);
  if (cluster_) cluster_->publish(to_utf8(name), to_utf8(line));
  // Long lines count more, so that they cannot carry a flood under the
  // line rate: one per started KiB.
  return (line.size() + 1023) / 1024;
}

void ChatMode::hold(const TcpConnectionPtr& conn, ServeSession& session,
                    TokenBucket::Clock::time_point now) {
  conn->pause_reading();
  if (session.chat_resume_timer != 0) return;
  std::weak_ptr<TcpConnection> weak = conn;
  // The timer holds no reference: a member that goes meanwhile is not kept,
  // and closed() cancels it.
  session.chat_resume_timer = conn->loop()->run_after(session.chat_bucket->wait(now), [weak] {
    const TcpConnectionPtr member = weak.lock();
    if (!member) return;
    if (auto* s = member->context<ServeSession>()) s->chat_resume_timer = 0;
    member->resume_reading();
  });
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

#include "serve/chat_cluster.h"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <optional>
#include <random>

#include "common/text_escape.h"
#include "serve/resp.h"
#include "tcpkit/buffer.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

using Clock = EventLoop::Clock;

struct ChatCluster::Link {
  Link(Role r, EventLoop* loop, std::vector<Endpoint> targets, const ClientOptions& options)
      : role(r), client(loop, std::move(targets), options) {}
  const char* name() const { return role == Role::subscriber ? "subscriber" : "publisher"; }

  struct Pending {
    Request request;
    Clock::time_point sent;
  };

  const Role role;
  TcpClient client;
  // For the connection at hand (reset by each new one):
  std::unique_ptr<RespReader> reader;
  std::deque<Pending> pending;  // requests sent and not yet answered, oldest first
  bool ready = false;           // Redis answered as Redis: the link may be used
  Clock::time_point last_ping{};
  // One log line per outage, not one per retry: set by the first line that
  // says the link does not work, cleared when it works again.
  bool trouble_logged = false;
};

namespace {

ClientOptions redis_client_options() {
  ClientOptions o;
  o.retry = true;
  o.connect_timeout = std::chrono::seconds(2);
  // Short back-off: a restarted Redis should rejoin the instances within
  // a couple of seconds, and these are two connections per instance, not a
  // thundering herd.
  o.initial_backoff = std::chrono::milliseconds(100);
  o.max_backoff = std::chrono::seconds(2);
  // A connection is not yet a working link (a port that is not Redis, a
  // refused password): ready() ends the back-off.
  o.reset_backoff_on_connect = false;
  // A Redis that stops reading would otherwise collect every line in our
  // memory; dropping the link makes the client reconnect afresh.
  o.connection.overflow = OverflowPolicy::close;
  o.connection.high_water_mark = size_t{16} * 1024 * 1024;
  return o;
}

// "<pid>-<16 hex digits>": unique across restarts and hosts, and the pid
// helps to find the process an id in a capture belongs to.
std::string make_instance_id() {
  std::random_device rd;
  uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return fmt::format("{}-{:016x}", ::getpid(), r);
}

std::string describe(std::error_code reason) {
  if (reason == Errc::peer_closed) return "connection closed by redis";
  return reason.message();
}

bool is_array_of(const RespValue& reply, std::string_view kind) {
  return reply.type == RespValue::Type::array && !reply.elements.empty() &&
         reply.elements[0].text == kind;
}

// What a reply that Redis would not give was, for the log.
std::string summary(const RespValue& reply) {
  switch (reply.type) {
    case RespValue::Type::simple:
    case RespValue::Type::error:
    case RespValue::Type::bulk:
      return fmt::format("\"{}\"", printable(reply.text, 40));
    case RespValue::Type::integer:
      return std::to_string(reply.integer);
    case RespValue::Type::nil:
      return "nil";
    case RespValue::Type::array:
      return reply.elements.empty()
                 ? "an empty array"
                 : fmt::format("an array of {} starting with {}", reply.elements.size(),
                               summary(reply.elements[0]));
  }
  return "a reply";
}

}  // namespace

ChatCluster::ChatCluster(EventLoop* loop, std::string label, std::vector<Endpoint> targets,
                         RedisAuth auth, size_t max_message, Logger& log, DeliverCallback deliver)
    : loop_(loop),
      label_(std::move(label)),
      instance_id_(make_instance_id()),
      auth_(std::move(auth)),
      max_payload_(kUtf8Growth * max_message + kPayloadOverhead),
      log_(log),
      deliver_(std::move(deliver)),
      subscriber_(std::make_unique<Link>(Role::subscriber, loop, targets, redis_client_options())),
      publisher_(std::make_unique<Link>(Role::publisher, loop, std::move(targets),
                                        redis_client_options())) {
  for (Link* link : {subscriber_.get(), publisher_.get()}) {
    link->client.set_on_connection(
        [this, link](const TcpConnectionPtr& c) { on_connection(*link, c); });
    link->client.set_on_message(
        [this, link](const TcpConnectionPtr& c, Buffer& in) { on_message(*link, c, in); });
    link->client.set_on_connect_error(
        [this, link](const Error& e, std::chrono::milliseconds retry_in) {
          on_connect_error(*link, e, retry_in);
        });
  }
}

ChatCluster::~ChatCluster() {
  stop();
}

void ChatCluster::start() {
  log_.log("cluster",
           fmt::format("cluster: joining chat through redis {} channel {} as instance {}", label_,
                       kChannel, instance_id_),
           {Logger::str("redis", label_), Logger::str("channel", std::string(kChannel)),
            Logger::str("instance", instance_id_)});
  subscriber_->client.connect();
  publisher_->client.connect();
  watch_timer_ = loop_->run_every(std::chrono::seconds(1), [this] { watch(); });
}

void ChatCluster::stop() {
  subscriber_->client.stop();
  publisher_->client.stop();
  if (watch_timer_ != 0) {
    loop_->cancel(watch_timer_);
    watch_timer_ = 0;
  }
}

void ChatCluster::publish(std::string_view nick, std::string_view text) {
  std::string payload = fmt::format("{}\n<{}> {}", instance_id_, nick, text);
  loop_->queue_in_loop(
      [this, alive = std::weak_ptr<const bool>(alive_), payload = std::move(payload)] {
        if (!alive.expired()) publish_in_loop(payload);
      });
}

void ChatCluster::publish_in_loop(const std::string& payload) {
  TcpConnectionPtr conn = publisher_->client.connection();
  if (!publisher_->ready || !conn || !conn->connected()) {
    ++unrelayed_;
    return;
  }
  send(*publisher_, *conn, Request::publish, resp_command({"PUBLISH", kChannel, payload}));
}

void ChatCluster::send(Link& link, TcpConnection& conn, Request request,
                       const std::string& command) {
  link.pending.push_back({request, loop_->now()});
  conn.send(command);
}

void ChatCluster::on_connection(Link& link, const TcpConnectionPtr& conn) {
  if (conn->connected()) {
    // A relayed payload is one bulk string; three of them, or a channel
    // name, is the most a pub/sub push holds. Twice the payload lets an
    // oversized one be read and dropped with a log line instead of costing
    // the link; past that it is a protocol error. A reply needs room for
    // one such string and a few short ones ("message", the channel), not
    // for the 256 strings that the element and depth limits allow.
    RespLimits limits;
    limits.max_bulk = 2 * max_payload_;
    limits.max_reply_bytes = limits.max_bulk + kReplyOverhead;
    link.reader = std::make_unique<RespReader>(limits);
    link.pending.clear();
    link.ready = false;
    // AUTH goes first; Redis answers commands in order, so what follows it
    // is judged with the credentials.
    if (!auth_.empty()) {
      send(link, *conn, Request::auth,
           auth_.user.empty() ? resp_command({"AUTH", auth_.password})
                              : resp_command({"AUTH", auth_.user, auth_.password}));
    }
    if (link.role == Role::subscriber) {
      send(link, *conn, Request::subscribe, resp_command({"SUBSCRIBE", kChannel}));
    } else {
      send(link, *conn, Request::ping, resp_command({"PING"}));
    }
    return;
  }
  // Lines handed to a link that went away may never have been relayed.
  unrelayed_ += static_cast<uint64_t>(
      std::count_if(link.pending.begin(), link.pending.end(),
                    [](const Link::Pending& p) { return p.request == Request::publish; }));
  link.pending.clear();
  link.ready = false;
  link.reader.reset();
  if (link.trouble_logged) return;  // the line that dropped it said why
  link.trouble_logged = true;
  std::string why = describe(conn->close_reason());
  log_.log("cluster",
           fmt::format("cluster: lost redis {}: {} ({}); local chat goes on, reconnecting", label_,
                       why, link.name()),
           {Logger::str("redis", label_), Logger::str("role", link.name()),
            Logger::str("state", "lost"), Logger::str("reason", why)});
}

void ChatCluster::on_connect_error(Link& link, const Error& error,
                                   std::chrono::milliseconds /*retry_in*/) {
  if (link.trouble_logged) return;
  link.trouble_logged = true;
  log_.log("cluster",
           fmt::format("cluster: cannot reach redis {}: {} ({}); local chat goes on, retrying",
                       label_, error.code().message(), link.name()),
           {Logger::str("redis", label_), Logger::str("role", link.name()),
            Logger::str("state", "unreachable"), Logger::str("reason", error.code().message())});
}

void ChatCluster::fail(Link& link, const TcpConnectionPtr& conn, const std::string& what) {
  if (!link.trouble_logged) {
    link.trouble_logged = true;
    log_.log("cluster",
             fmt::format("cluster: redis {} {} ({}); local chat goes on, reconnecting", label_,
                         what, link.name()),
             {Logger::str("redis", label_), Logger::str("role", link.name()),
              Logger::str("state", "failed"), Logger::str("reason", what)});
  }
  link.reader.reset();
  link.ready = false;
  conn->force_close(std::make_error_code(std::errc::protocol_error));
}

void ChatCluster::ready(Link& link) {
  link.ready = true;
  link.trouble_logged = false;
  link.client.reset_backoff();
  log_.log("cluster", fmt::format("cluster: connected to redis {} ({})", label_, link.name()),
           {Logger::str("redis", label_), Logger::str("role", link.name()),
            Logger::str("state", "connected")});
  if (link.role == Role::subscriber) {
    log_.log("cluster", fmt::format("cluster: subscribed to {} on redis {}", kChannel, label_),
             {Logger::str("redis", label_), Logger::str("channel", std::string(kChannel)),
              Logger::str("state", "subscribed")});
  } else if (uint64_t lost = std::exchange(unrelayed_, 0); lost > 0) {
    log_.log("cluster",
             fmt::format("cluster: {} local lines were not relayed while redis was away", lost),
             {Logger::str("redis", label_), Logger::num("unrelayed", lost)});
  }
}

void ChatCluster::watch() {
  const Clock::time_point now = loop_->now();
  for (Link* link : {subscriber_.get(), publisher_.get()}) {
    TcpConnectionPtr conn = link->client.connection();
    if (!conn || !conn->connected() || !link->reader) continue;
    if (!link->pending.empty() && now - link->pending.front().sent >= kReplyTimeout) {
      const auto waited = kReplyTimeout.count();
      fail(*link, conn,
           link->ready ? fmt::format("stopped answering ({} s without a reply)", waited)
                       : fmt::format("did not answer within {} s: is it Redis?", waited));
    } else if (link->ready && link->role == Role::subscriber && link->pending.empty() &&
               now - link->last_ping >= kPingInterval) {
      link->last_ping = now;
      send(*link, *conn, Request::ping, resp_command({"PING"}));
    }
  }
}

void ChatCluster::on_message(Link& link, const TcpConnectionPtr& conn, Buffer& in) {
  if (!link.reader) {
    in.retrieve_all();
    return;
  }
  link.reader->feed(in.view());
  in.retrieve_all();
  while (link.reader) {
    RespValue reply;
    RespParse r = link.reader->next(&reply);
    if (r == RespParse::need_more) return;
    if (r == RespParse::bad) {
      fail(link, conn, "sent a malformed reply: " + printable(link.reader->error()));
      return;
    }
    on_reply(link, conn, reply);
  }
}

void ChatCluster::on_reply(Link& link, const TcpConnectionPtr& conn, const RespValue& reply) {
  // A line on the subscription answers no request.
  if (link.role == Role::subscriber && link.ready && is_array_of(reply, "message")) {
    if (reply.elements.size() == 3) on_pubsub_message(reply.elements[2].text);
    return;
  }
  if (link.pending.empty()) {
    fail(link, conn, "sent " + summary(reply) + ", which answers nothing we asked");
    return;
  }
  const Request request = link.pending.front().request;
  link.pending.pop_front();
  on_answer(link, conn, request, reply);
}

void ChatCluster::on_answer(Link& link, const TcpConnectionPtr& conn, Request request,
                            const RespValue& reply) {
  if (reply.type == RespValue::Type::error) {
    if (request != Request::publish) {
      fail(link, conn, "answered: " + printable(reply.text));
      return;
    }
    // One refused line is lost; the link is Redis's and stays.
    ++unrelayed_;
    if (!std::exchange(publish_refused_, true)) {
      const std::string text = printable(reply.text);
      log_.log("cluster",
               fmt::format("cluster: redis {} answered: {} (publisher); lines are not relayed "
                           "while it refuses them",
                           label_, text),
               {Logger::str("redis", label_), Logger::str("role", link.name()),
                Logger::str("error", text)});
    }
    return;
  }
  bool as_redis = false;
  switch (request) {
    case Request::auth:
      as_redis = reply.type == RespValue::Type::simple && reply.text == "OK";
      break;
    case Request::ping:
      // Subscribed, Redis answers a PING with ["pong", ""].
      as_redis = link.role == Role::subscriber
                     ? is_array_of(reply, "pong")
                     : reply.type == RespValue::Type::simple && reply.text == "PONG";
      if (as_redis && !link.ready) ready(link);
      break;
    case Request::subscribe:
      as_redis = is_array_of(reply, "subscribe") && reply.elements.size() == 3 &&
                 reply.elements[1].text == kChannel;
      if (as_redis) ready(link);
      break;
    case Request::publish:
      as_redis = reply.type == RespValue::Type::integer;
      if (as_redis && std::exchange(publish_refused_, false)) {
        log_.log("cluster",
                 fmt::format("cluster: redis {} accepts lines again; {} were not relayed", label_,
                             std::exchange(unrelayed_, 0)),
                 {Logger::str("redis", label_), Logger::str("state", "accepting")});
      }
      break;
  }
  if (!as_redis)
    fail(link, conn, "answered " + summary(reply) + ", as Redis would not: is it Redis?");
}

void ChatCluster::on_pubsub_message(std::string_view payload) {
  size_t newline = payload.find('\n');
  if (newline == std::string_view::npos) return;  // not from a tcpkit instance
  const std::string_view instance = payload.substr(0, newline);
  if (instance == instance_id_) return;
  auto drop = [&](std::string_view reason, std::string_view what) {
    log_.log("cluster",
             fmt::format("cluster: dropped a relayed line from redis {} {}", label_, what),
             {Logger::str("redis", label_), Logger::str("state", "dropped"),
              Logger::str("reason", std::string(reason))});
  };
  // The id becomes part of a name members see (a tag) and is remembered
  // with the names an instance used: only what an instance publishes.
  if (!is_instance_id(instance)) {
    drop("bad instance id", "from a bad instance id: " + printable(instance, 64));
    return;
  }
  if (payload.size() > max_payload_) {
    log_.log("cluster",
             fmt::format(
                 "cluster: dropped a relayed line of {} bytes from redis {} (over --max-message)",
                 payload.size(), label_),
             {Logger::str("redis", label_), Logger::str("state", "dropped"),
              Logger::str("reason", "too large"), Logger::num("bytes", payload.size())});
    return;
  }
  std::string_view line = payload.substr(newline + 1);
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (line.empty()) return;
  if (line.find_first_of("\r\n") != std::string_view::npos) {
    drop("line break inside", "with a line break inside: " + printable(line, 200));
    return;
  }
  // "<NICK> TEXT", a nick holding no space: the first "> " ends it.
  const size_t end = line.find("> ");
  if (line.front() != '<' || end == std::string_view::npos) {
    drop("not a chat line", "that is not \"<NICK> TEXT\": " + printable(line, 200));
    return;
  }
  const std::string_view nick = line.substr(1, end - 1);
  const std::string_view text = line.substr(end + 2);
  if (auto problem = member_name_problem(nick)) {
    drop("bad nick", fmt::format("under a bad nick ({}): {}", *problem, printable(line, 200)));
    return;
  }
  if (text.empty()) return;
  deliver_(nick, text, instance);
}

namespace {

// "%41" → "A": user and password in a URL are percent-encoded (RFC 3986).
std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
    if (ec != std::errc() || end != text.data() + i + 3) return std::nullopt;
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

// The URL as a log or an error may show it: the password replaced. The
// user information ends at the last '@', as parse_redis_url() and
// redis_auth() read it (a password may hold an unescaped '@'); the last one
// in the whole URL, not only in its authority, so that a password with an
// unescaped '/' is hidden too, not shown up to that '/'.
std::string redacted(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const size_t user_start = scheme_end + 3;
  const size_t at = url.rfind('@');
  if (at == std::string_view::npos || at < user_start) return std::string(url);
  std::string_view userinfo = url.substr(user_start, at - user_start);
  size_t colon = userinfo.find(':');
  std::string user(colon == std::string_view::npos ? std::string_view()
                                                   : userinfo.substr(0, colon));
  return fmt::format("{}{}:***{}", url.substr(0, user_start), user, url.substr(at));
}

}  // namespace

bool is_instance_id(std::string_view id) {
  const size_t dash = id.find('-');
  if (dash == std::string_view::npos || dash == 0 || id.size() > kMaxInstanceIdBytes) return false;
  const std::string_view pid = id.substr(0, dash);
  const std::string_view random = id.substr(dash + 1);
  return pid.find_first_not_of("0123456789") == std::string_view::npos && random.size() == 16 &&
         random.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

Result<std::pair<std::string, uint16_t>> parse_redis_url(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  const std::string context = fmt::format("--cluster '{}'", redacted(url));
  if (url.substr(0, kScheme.size()) != kScheme)
    return Error(Errc::bad_address, context + " (expected redis://HOST:PORT)");
  std::string_view rest = url.substr(kScheme.size());
  // Pub/sub channels are global in Redis, not per database, so a "/N"
  // database suffix changes nothing and is accepted.
  std::string_view authority = rest.substr(0, rest.find('/'));
  // USER:PASSWORD@ is redis_auth()'s business.
  if (size_t at = authority.rfind('@'); at != std::string_view::npos)
    authority.remove_prefix(at + 1);
  if (authority.empty()) return Error(Errc::bad_host, context);
  const bool bracketed = authority.front() == '[';
  const size_t colons = std::count(authority.begin(), authority.end(), ':');
  const bool has_port = bracketed ? authority.find("]:") != std::string_view::npos : colons == 1;
  if (!bracketed && colons > 1)
    return Error(Errc::bad_host, context + " (write IPv6 addresses as [::1]:6379)");
  if (has_port) {
    auto split = Endpoint::split_host_port(authority);
    if (!split) return Error(split.error().code(), context);
    return *split;
  }
  std::string_view host = authority;
  if (bracketed) {
    if (host.back() != ']') return Error(Errc::bad_host, context);
    host = host.substr(1, host.size() - 2);
  }
  return std::pair<std::string, uint16_t>(std::string(host), 6379);
}

}  // namespace tcpkit::cli

namespace tcpkit::cli {

Result<RedisAuth> redis_auth(std::string_view url, const std::string& auth_file) {
  RedisAuth auth;
  std::string_view rest = url.substr(std::min(url.size(), url.find("://") + 3));
  std::string_view authority = rest.substr(0, rest.find('/'));
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    size_t colon = userinfo.find(':');
    auto user = percent_decode(userinfo.substr(0, colon));
    auto password =
        percent_decode(colon == std::string_view::npos ? "" : userinfo.substr(colon + 1));
    if (!user || !password)
      return Error(
          Errc::bad_address,
          fmt::format("--cluster '{}' (bad %-escape in the user or password)", redacted(url)));
    auth.user = std::move(*user);
    auth.password = std::move(*password);
  }
  if (!auth.password.empty()) return auth;
  if (!auth_file.empty()) {
    std::ifstream in(auth_file);
    if (!in) {
      return Error(std::error_code(errno, std::generic_category()),
                   fmt::format("--cluster-auth-file '{}'", auth_file));
    }
    std::getline(in, auth.password);
    if (!auth.password.empty() && auth.password.back() == '\r') auth.password.pop_back();
    if (auth.password.empty())
      return Error(Errc::bad_address,
                   fmt::format("--cluster-auth-file '{}' (the first line, the password, is empty)",
                               auth_file));
    return auth;
  }
  if (const char* env = std::getenv("TCPKIT_REDIS_PASSWORD"); env != nullptr) auth.password = env;
  return auth;
}

}  // namespace tcpkit::cli

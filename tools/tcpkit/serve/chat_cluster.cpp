#include "serve/chat_cluster.h"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>

#include "common/text_escape.h"
#include "serve/resp.h"
#include "tcpkit/buffer.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

struct ChatCluster::Link {
  Link(Role r, EventLoop* loop, std::vector<Endpoint> targets, const ClientOptions& options)
      : role(r), client(loop, std::move(targets), options) {}
  const char* name() const { return role == Role::subscriber ? "subscriber" : "publisher"; }

  const Role role;
  TcpClient client;
  std::unique_ptr<RespReader> reader;  // fresh for each connection
  bool unreachable_logged = false;     // one "cannot reach" line per outage, not one per retry
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

}  // namespace

ChatCluster::ChatCluster(EventLoop* loop, std::string label, std::vector<Endpoint> targets,
                         RedisAuth auth, size_t max_message, Logger& log, DeliverCallback deliver)
    : label_(std::move(label)),
      instance_id_(make_instance_id()),
      auth_(std::move(auth)),
      max_payload_(max_message + kPayloadOverhead),
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
}

void ChatCluster::stop() {
  subscriber_->client.stop();
  publisher_->client.stop();
}

void ChatCluster::publish(std::string_view line) {
  TcpConnectionPtr conn = publisher_->client.connection();
  if (!conn || !conn->connected()) {
    unrelayed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::string payload;
  payload.reserve(instance_id_.size() + 1 + line.size());
  payload += instance_id_;
  payload += '\n';
  payload += line;
  conn->send(resp_command({"PUBLISH", kChannel, payload}));
}

void ChatCluster::on_connection(Link& link, const TcpConnectionPtr& conn) {
  if (conn->connected()) {
    link.unreachable_logged = false;
    // A relayed payload is one bulk string; three of them, or a channel
    // name, is the most a pub/sub push holds. Twice the payload lets an
    // oversized one be read and dropped with a log line instead of costing
    // the link; past that it is a protocol error.
    RespLimits limits;
    limits.max_bulk = 2 * max_payload_;
    link.reader = std::make_unique<RespReader>(limits);
    // AUTH goes first; Redis answers commands in order, so what follows it
    // is judged with the credentials.
    if (!auth_.empty()) {
      conn->send(auth_.user.empty() ? resp_command({"AUTH", auth_.password})
                                    : resp_command({"AUTH", auth_.user, auth_.password}));
    }
    log_.log("cluster", fmt::format("cluster: connected to redis {} ({})", label_, link.name()),
             {Logger::str("redis", label_), Logger::str("role", link.name()),
              Logger::str("state", "connected")});
    if (link.role == Role::subscriber) {
      conn->send(resp_command({"SUBSCRIBE", kChannel}));
    } else if (uint64_t lost = unrelayed_.exchange(0, std::memory_order_relaxed); lost > 0) {
      log_.log("cluster",
               fmt::format("cluster: {} local lines were not relayed while redis was away", lost),
               {Logger::str("redis", label_), Logger::num("unrelayed", lost)});
    }
    return;
  }
  std::string why = describe(conn->close_reason());
  log_.log("cluster",
           fmt::format("cluster: lost redis {}: {} ({}); local chat goes on, reconnecting", label_,
                       why, link.name()),
           {Logger::str("redis", label_), Logger::str("role", link.name()),
            Logger::str("state", "lost"), Logger::str("reason", why)});
}

void ChatCluster::on_connect_error(Link& link, const Error& error,
                                   std::chrono::milliseconds /*retry_in*/) {
  if (link.unreachable_logged) return;
  link.unreachable_logged = true;
  log_.log("cluster",
           fmt::format("cluster: cannot reach redis {}: {} ({}); local chat goes on, retrying",
                       label_, error.code().message(), link.name()),
           {Logger::str("redis", label_), Logger::str("role", link.name()),
            Logger::str("state", "unreachable"), Logger::str("reason", error.code().message())});
}

void ChatCluster::on_message(Link& link, const TcpConnectionPtr& conn, Buffer& in) {
  if (!link.reader) {
    in.retrieve_all();
    return;
  }
  link.reader->feed(in.view());
  in.retrieve_all();
  for (;;) {
    RespValue reply;
    RespParse r = link.reader->next(&reply);
    if (r == RespParse::need_more) return;
    if (r == RespParse::bad) {
      const std::string why = printable(link.reader->error());
      log_.log("cluster",
               fmt::format("cluster: redis {} sent a malformed reply: {} ({}); reconnecting",
                           label_, why, link.name()),
               {Logger::str("redis", label_), Logger::str("role", link.name()),
                Logger::str("state", "protocol error"), Logger::str("reason", why)});
      link.reader.reset();
      conn->force_close(std::make_error_code(std::errc::protocol_error));
      return;
    }
    on_reply(link, reply);
  }
}

void ChatCluster::on_reply(Link& link, const RespValue& reply) {
  if (reply.type == RespValue::Type::error) {
    const std::string text = printable(reply.text);
    log_.log("cluster",
             fmt::format("cluster: redis {} answered: {} ({})", label_, text, link.name()),
             {Logger::str("redis", label_), Logger::str("role", link.name()),
              Logger::str("error", text)});
    return;
  }
  // The publisher's replies are subscriber counts; nothing to do with them.
  if (link.role != Role::subscriber || reply.type != RespValue::Type::array ||
      reply.elements.empty())
    return;
  const auto& e = reply.elements;
  if (e[0].text == "message" && e.size() == 3) {
    on_pubsub_message(e[2].text);
  } else if (e[0].text == "subscribe" && e.size() == 3) {
    log_.log("cluster",
             fmt::format("cluster: subscribed to {} on redis {}", printable(e[1].text), label_),
             {Logger::str("redis", label_), Logger::str("channel", e[1].text),
              Logger::str("state", "subscribed")});
  }
}

void ChatCluster::on_pubsub_message(std::string_view payload) {
  size_t newline = payload.find('\n');
  if (newline == std::string_view::npos) return;  // not from a tcpkit instance
  if (payload.substr(0, newline) == instance_id_) return;
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
    log_.log(
        "cluster",
        fmt::format("cluster: dropped a relayed line from redis {} with a line break inside: {}",
                    label_, printable(line, 200)),
        {Logger::str("redis", label_), Logger::str("state", "dropped"),
         Logger::str("reason", "line break inside")});
    return;
  }
  deliver_(std::string(line) + '\n');
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

// The URL as a log or an error may show it: the password replaced.
std::string redacted(std::string_view url) {
  size_t at = url.find('@');
  size_t scheme_end = url.find("://");
  if (at == std::string_view::npos || scheme_end == std::string_view::npos || at < scheme_end)
    return std::string(url);
  std::string_view userinfo = url.substr(scheme_end + 3, at - scheme_end - 3);
  size_t colon = userinfo.find(':');
  std::string user(colon == std::string_view::npos ? std::string_view()
                                                   : userinfo.substr(0, colon));
  return fmt::format("{}{}:***{}", url.substr(0, scheme_end + 3), user, url.substr(at));
}

}  // namespace

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

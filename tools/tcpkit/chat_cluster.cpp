#include "chat_cluster.h"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "resp.h"
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
  bool unreachable_logged = false;  // one "cannot reach" line per outage, not one per retry
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
  o.connection.high_water_mark = 16 * 1024 * 1024;
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
                         Logger& log, DeliverCallback deliver)
    : label_(std::move(label)),
      instance_id_(make_instance_id()),
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
  for (;;) {
    RespValue reply;
    size_t consumed = 0;
    RespParse r = parse_resp(std::string_view(in.peek(), in.readable_bytes()), kMaxPayload, &reply,
                             &consumed);
    if (r == RespParse::need_more) return;
    if (r == RespParse::bad) {
      log_.log("cluster",
               fmt::format("cluster: redis {} sent a malformed reply ({}); reconnecting", label_,
                           link.name()),
               {Logger::str("redis", label_), Logger::str("role", link.name()),
                Logger::str("state", "protocol error")});
      in.retrieve_all();
      conn->force_close(std::make_error_code(std::errc::protocol_error));
      return;
    }
    in.retrieve(consumed);
    on_reply(link, reply);
  }
}

void ChatCluster::on_reply(Link& link, const RespValue& reply) {
  if (reply.type == RespValue::Type::error) {
    log_.log("cluster",
             fmt::format("cluster: redis {} answered: {} ({})", label_, reply.text, link.name()),
             {Logger::str("redis", label_), Logger::str("role", link.name()),
              Logger::str("error", reply.text)});
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
    log_.log("cluster", fmt::format("cluster: subscribed to {} on redis {}", e[1].text, label_),
             {Logger::str("redis", label_), Logger::str("channel", e[1].text),
              Logger::str("state", "subscribed")});
  }
}

void ChatCluster::on_pubsub_message(std::string_view payload) {
  size_t newline = payload.find('\n');
  if (newline == std::string_view::npos) return;  // not from a tcpkit instance
  if (payload.substr(0, newline) == instance_id_) return;
  std::string_view line = payload.substr(newline + 1);
  if (line.empty()) return;
  if (line.back() == '\n') {
    deliver_(line);
    return;
  }
  deliver_(std::string(line) + '\n');
}

Result<std::pair<std::string, uint16_t>> parse_redis_url(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  const std::string context = fmt::format("--cluster '{}'", url);
  if (url.substr(0, kScheme.size()) != kScheme)
    return Error(Errc::bad_address, context + " (expected redis://HOST:PORT)");
  std::string_view rest = url.substr(kScheme.size());
  // Pub/sub channels are global in Redis, not per database, so a "/N"
  // database suffix changes nothing and is accepted.
  std::string_view authority = rest.substr(0, rest.find('/'));
  if (authority.find('@') != std::string_view::npos) {
    return Error(Errc::bad_address, context + " (redis passwords are not supported)");
  }
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

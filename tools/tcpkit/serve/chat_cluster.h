// ChatCluster: joins the chat rooms of several `tcpkit serve --mode chat`
// instances through Redis pub/sub (`--cluster redis://HOST:PORT`).
//
// Every instance publishes its local lines to one channel and delivers the
// lines it receives from the others to its local clients. A Redis connection
// that has subscribed may only issue (un)subscribe commands, so there are two
// TcpClients: one SUBSCRIBEs, one PUBLISHes. A payload is the publishing
// instance's id, a newline and "<NICK> TEXT" in UTF-8, whatever each
// instance's --encoding: the receiving instance converts it to its own and
// escapes it as it does a member's line, so instances of different
// encodings share a room, and an instance skips its own lines when they come
// back on the subscription.
//
// Redis is a trust boundary (design decision 10). With a password (from the
// URL, --cluster-auth-file or TCPKIT_REDIS_PASSWORD; see RedisAuth) each link
// sends AUTH before anything else. A link is used only once Redis has
// answered as Redis does: the subscriber's SUBSCRIBE confirmed, the
// publisher's PING answered PONG. A refusal (a wrong or missing password), a
// reply that is not Redis's, or no answer within kReplyTimeout drops the
// link with one log line per outage, and the reconnects back off further
// until a link works (a port that is not Redis is not hammered). A link that
// works is watched: a Redis that stops answering (a PING on the idle
// subscriber, the publisher's own PUBLISHes) is dropped after kReplyTimeout.
// What comes back is bounded: RespReader refuses replies larger than a
// relayed line can be, and a payload longer than a member's line can become
// is dropped with a log line rather than handed to every member (whose
// output buffers it would overflow). Only "<NICK> TEXT" with a valid nick is
// relayed: anything else would show the members a line no member typed (a
// "* ..." notice, a line break inside), so it is dropped and logged, never
// split.
//
// Redis is optional to the chat: while it is away, local chat goes on, lines
// are not relayed (and not queued: a line hours late is worse than a lost
// one), and both clients retry with back-off; on return the subscriber
// subscribes again.
//
// Owned by ServeApp; lives on the base loop, and is destroyed in its thread.
// publish() is safe from any thread (the I/O loops call it): it hands the
// line to the base loop, to which the rest belongs.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/logger.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_client.h"

namespace tcpkit::cli {

struct RespValue;

// Credentials for Redis AUTH: a password alone (Redis `requirepass`) or an
// ACL user and its password. Never logged.
struct RedisAuth {
  std::string user;  // "" for the default user
  std::string password;
  bool empty() const { return password.empty(); }
};

class ChatCluster {
 public:
  static constexpr std::string_view kChannel = "tcpkit:chat";
  // A relayed payload is the instance id, "\n", the "<nick> " prefix and a
  // member's line in UTF-8; this is the room for all but the line.
  static constexpr size_t kPayloadOverhead = 256;
  // A line of --max-message bytes is at most this many times as long in
  // UTF-8: a character of one byte in the wire encoding may take three
  // (TIS-620's Thai), and an invalid byte is written as the four "\xHH".
  static constexpr size_t kUtf8Growth = 4;
  // A reply from Redis holds at most one payload and this many bytes of
  // other strings ("message", the channel, a pattern, a short answer).
  static constexpr size_t kReplyOverhead = 1024;
  // How long Redis may take to answer a request before the link is dropped.
  static constexpr std::chrono::seconds kReplyTimeout{5};
  // How long the subscriber stays quiet before it asks whether Redis is there.
  static constexpr std::chrono::seconds kPingInterval{2};

  // Receives a line from another instance, its nick and text in UTF-8, and
  // that instance's id; base loop.
  using DeliverCallback =
      std::function<void(std::string_view nick, std::string_view text, std::string_view instance)>;

  // `label` names Redis in the log ("127.0.0.1:6379"); `targets` are its
  // resolved addresses; `auth` is sent first on each link when it has a
  // password; `max_message` is the chat's --max-message.
  ChatCluster(EventLoop* loop, std::string label, std::vector<Endpoint> targets, RedisAuth auth,
              size_t max_message, Logger& log, DeliverCallback deliver);
  ~ChatCluster();
  ChatCluster(const ChatCluster&) = delete;
  ChatCluster& operator=(const ChatCluster&) = delete;

  void start();
  // Stops both clients; no callback runs afterwards.
  void stop();
  // Any thread. Relays a member's line (without its "\n") under its nick,
  // both in UTF-8, to the other instances.
  void publish(std::string_view nick, std::string_view text);

  const std::string& instance_id() const { return instance_id_; }

 private:
  enum class Role { subscriber, publisher };
  enum class Request { auth, ping, subscribe, publish };
  struct Link;  // one Redis connection and what the log knows about it

  void on_connection(Link& link, const TcpConnectionPtr& conn);
  void on_connect_error(Link& link, const Error& error, std::chrono::milliseconds retry_in);
  void on_message(Link& link, const TcpConnectionPtr& conn, Buffer& in);
  void on_reply(Link& link, const TcpConnectionPtr& conn, const RespValue& reply);
  void on_answer(Link& link, const TcpConnectionPtr& conn, Request request, const RespValue& reply);
  void on_pubsub_message(std::string_view payload);
  void publish_in_loop(const std::string& payload);
  void send(Link& link, TcpConnection& conn, Request request, const std::string& command);
  void ready(Link& link);
  // Drops the link's connection after one log line per outage: `what` says
  // why ("answered: ...", "did not answer within 5 s").
  void fail(Link& link, const TcpConnectionPtr& conn, const std::string& what);
  // Every second: a request unanswered for kReplyTimeout drops its link,
  // and an idle subscriber sends a PING.
  void watch();

  EventLoop* const loop_;
  const std::string label_;
  const std::string instance_id_;
  const RedisAuth auth_;
  const size_t max_payload_;
  Logger& log_;
  DeliverCallback deliver_;
  std::unique_ptr<Link> subscriber_;
  std::unique_ptr<Link> publisher_;
  uint64_t unrelayed_ = 0;        // lines not relayed while the publisher was away or refused
  bool publish_refused_ = false;  // Redis answers PUBLISH with an error (logged once)
  TimerId watch_timer_ = 0;
  // Expires with the cluster: what publish() queued for the base loop checks it.
  std::shared_ptr<const bool> alive_ = std::make_shared<const bool>(true);
};

// Whether `id` has the shape of an instance id as make_instance_id() writes
// it: "<pid>-<16 lower-case hex digits>", the pid 1 to 10 decimal digits.
// A relayed line's id comes from Redis, so from outside: it is shown to
// members (ChatRoom::relayed_name()'s tag) and remembered, and anything else
// (control bytes, megabytes) is refused.
constexpr size_t kMaxInstanceIdBytes = 10 + 1 + 16;
bool is_instance_id(std::string_view id);

// "redis://[[USER]:PASSWORD@]HOST[:PORT][/]" → host and port (6379 when left
// out). Errors show the URL with its password replaced by "***".
Result<std::pair<std::string, uint16_t>> parse_redis_url(std::string_view url);

// The credentials: from the URL's user information when it has a password,
// else the password from the first line of `auth_file` (when given) or the
// TCPKIT_REDIS_PASSWORD environment variable, with the URL's user if any.
// A command line is visible to every local user in ps, which is why the file
// and the environment exist.
Result<RedisAuth> redis_auth(std::string_view url, const std::string& auth_file);

}  // namespace tcpkit::cli

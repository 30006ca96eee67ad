// ChatCluster: joins the chat rooms of several `tcpkit serve --mode chat`
// instances through Redis pub/sub (`--cluster redis://HOST:PORT`).
//
// Every instance publishes its local lines to one channel and delivers the
// lines it receives from the others to its local clients. A Redis connection
// that has subscribed may only issue (un)subscribe commands, so there are two
// TcpClients: one SUBSCRIBEs, one PUBLISHes. Each payload starts with the
// publishing instance's id, so an instance skips its own lines when they come
// back on the subscription.
//
// Redis is a trust boundary (design decision 10). With a password (from the
// URL, --cluster-auth-file or TCPKIT_REDIS_PASSWORD; see RedisAuth) each link
// sends AUTH before anything else. What comes back is bounded: RespReader
// refuses replies larger than a relayed line can be, and a payload over
// --max-message is dropped with a log line rather than handed to every member
// (whose output buffers it would overflow). A relayed line is one line: one
// holding CR or LF inside it would show the members lines nobody typed, so it
// is dropped, logged, never split.
//
// Redis is optional to the chat: while it is away, local chat goes on, lines
// are not relayed (and not queued: a line hours late is worse than a lost
// one), and both clients retry with back-off; on return the subscriber
// subscribes again.
//
// Owned by ServeApp; lives on the base loop. publish() is safe from any
// thread (the I/O loops call it); the rest belongs to the base loop.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/logger.h"
#include "tcpkit/endpoint.h"
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
  // line of at most --max-message bytes; this is the room for all but the line.
  static constexpr size_t kPayloadOverhead = 256;

  // Receives a line (ending in "\n") from another instance; base loop.
  using DeliverCallback = std::function<void(std::string_view line)>;

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
  // Any thread. Relays one local line (ending in "\n") to the other instances.
  void publish(std::string_view line);

  const std::string& instance_id() const { return instance_id_; }

 private:
  enum class Role { subscriber, publisher };
  struct Link;  // one Redis connection and what the log knows about it

  void on_connection(Link& link, const TcpConnectionPtr& conn);
  void on_connect_error(Link& link, const Error& error, std::chrono::milliseconds retry_in);
  void on_message(Link& link, const TcpConnectionPtr& conn, Buffer& in);
  void on_reply(Link& link, const RespValue& reply);
  void on_pubsub_message(std::string_view payload);

  const std::string label_;
  const std::string instance_id_;
  const RedisAuth auth_;
  const size_t max_payload_;
  Logger& log_;
  DeliverCallback deliver_;
  std::unique_ptr<Link> subscriber_;
  std::unique_ptr<Link> publisher_;
  std::atomic<uint64_t> unrelayed_{0};  // lines dropped while the publisher was away
};

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

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

#include "logger.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_client.h"

namespace tcpkit::cli {

struct RespValue;

class ChatCluster {
 public:
  static constexpr std::string_view kChannel = "tcpkit:chat";
  // A relayed line is at most the chat's --max-message plus the id; anything
  // bigger from Redis is a protocol error.
  static constexpr size_t kMaxPayload = 64 * 1024 * 1024;

  // Receives a line (ending in "\n") from another instance; base loop.
  using DeliverCallback = std::function<void(std::string_view line)>;

  // `label` names Redis in the log ("127.0.0.1:6379"); `targets` are its
  // resolved addresses.
  ChatCluster(EventLoop* loop, std::string label, std::vector<Endpoint> targets, Logger& log,
              DeliverCallback deliver);
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
  Logger& log_;
  DeliverCallback deliver_;
  std::unique_ptr<Link> subscriber_;
  std::unique_ptr<Link> publisher_;
  std::atomic<uint64_t> unrelayed_{0};  // lines dropped while the publisher was away
};

// "redis://HOST[:PORT][/]" → host and port (6379 when left out).
Result<std::pair<std::string, uint16_t>> parse_redis_url(std::string_view url);

}  // namespace tcpkit::cli

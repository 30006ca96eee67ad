// ChatMode: `serve --mode chat`, a line-based room. Every line goes to every
// other member, /nick NAME renames; with --cluster, lines travel through
// Redis to the members of other instances too. Names and lines are kept and
// sent in the wire encoding. Flood control (--chat-rate): each member's
// lines enter the room at a bounded rate after a burst; the rest wait in
// the connection and the kernel, and TCP slows the sender down.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "serve/chat_cluster.h"
#include "serve/chat_room.h"
#include "serve/mode_handler.h"
#include "serve/serve_options.h"
#include "serve/token_bucket.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"

namespace tcpkit::cli {

class ChatMode final : public ModeHandler {
 public:
  ChatMode(const ServeOptions& options, ServeObserver& observer);
  ~ChatMode() override;

  MessageCallback message_callback() override;
  // With --chat-rate, each member's session holds its token bucket.
  bool keeps_session() const override { return rate_ > 0; }
  void open_session(ServeSession& session) override;
  void admitted(const TcpConnectionPtr& conn) override;
  void draining(const TcpConnectionPtr& conn) override;
  void closed(const TcpConnectionPtr& conn) override;
  std::string client_name(const TcpConnectionPtr& conn) const override;

  // Relays lines through the Redis at `redis` (named `label` in the log) to
  // other instances; before start_cluster().
  void join_cluster(EventLoop* loop, std::string label, std::vector<Endpoint> redis,
                    RedisAuth auth);
  void start_cluster();
  void stop_cluster();

 private:
  void on_message(const TcpConnectionPtr& conn, Buffer& in);
  // Serves one line; returns what it costs the member's bucket: a token
  // per started KiB of a line said to the room, one for a /nick, none for
  // a line nobody hears (an empty one, a health check's).
  size_t handle_line(const TcpConnectionPtr& conn, std::string_view line);
  // The member's bucket, or null where no limit applies (--chat-rate 0, a
  // health check, a server that is draining).
  TokenBucket* bucket_of(const TcpConnectionPtr& conn) const;
  // The member is over its rate: reading it stops until its bucket holds a
  // token again; what it sent meanwhile waits, in order.
  static void hold(const TcpConnectionPtr& conn, ServeSession& session,
                   TokenBucket::Clock::time_point now);
  // Why a /nick (in the wire encoding) is refused, or nullopt.
  std::optional<std::string> check_nick(std::string_view wire) const;
  void refuse_nick(const TcpConnectionPtr& conn, std::string_view why) const;
  // Text between the wire encoding and the cluster's UTF-8.
  std::string to_utf8(std::string_view wire) const;
  std::string from_utf8(std::string_view utf8) const;
  // Sends to the local members and counts the lines for the metrics.
  void broadcast(std::string_view line, const TcpConnectionPtr& except);
  // What to send for a join (or leave) notice `text`: the notice, after a
  // count of those held back since the last one went; nothing while the
  // room's budget for notices is spent (the notice is counted instead).
  std::optional<std::string> pace_notice(bool joined, std::string text);

  const std::string encoding_;
  const bool utf8_;  // the wire encoding is UTF-8
  const size_t max_message_;
  const uint32_t rate_;  // --chat-rate, 0: no limit
  ServeObserver& observer_;
  ChatRoom room_;
  // The server has begun to stop: lines are no longer passed on.
  std::atomic<bool> draining_{false};
  // Join and leave notices share one budget for the room, --chat-rate a
  // second after a burst of as many: a client that connects and closes in
  // a loop would otherwise send every member two lines per connection,
  // faster than one who reads at a normal pace takes them, and have that
  // member dropped as a slow reader. Any loop's thread.
  struct Notices {
    std::mutex mutex;
    std::optional<TokenBucket> budget;
    uint64_t joined = 0;  // held back since the last notice that went
    uint64_t left = 0;
  };
  Notices notices_;
  // Declared after the room it delivers to, so it is destroyed first.
  std::unique_ptr<ChatCluster> cluster_;
};

}  // namespace tcpkit::cli

// ServeApp: `tcpkit serve` on top of TcpServer — the tutorial's server grown
// into ack / echo / discard / chat modes with framing and text encodings.
//
// Created and run by serve_cmd.cpp in the main thread, which owns the base
// loop. Connection callbacks run in the I/O loops; shared state (the chat
// room, counters, the log) is safe across them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/logger.h"
#include "serve/chat_cluster.h"
#include "serve/client_registry.h"
#include "serve/serve_metrics.h"
#include "tcpkit/cidr.h"
#include "tcpkit/close_reason.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_server.h"
#include "tcpkit/tls_context.h"

namespace tcpkit::cli {

enum class ServeMode { ack, echo, discard, chat };
enum class Framing { raw, line, length };

struct ServeOptions {
  IoBackend io_backend = IoBackend::kDefault;  // --io-backend
  std::string host = "127.0.0.1";
  uint16_t port = 8888;
  ServeMode mode = ServeMode::ack;
  std::string reply = "收到了你的訊息";
  Framing framing = Framing::raw;
  std::string encoding = "utf-8";
  size_t max_message = size_t{1024} * 1024;
  int threads = 0;
  size_t max_conns = 0;
  double idle_timeout_s = 0;
  bool reuse_port = false;
  bool quiet = false;
  LogFormat log_format = LogFormat::text;
  size_t high_water_mark = size_t{1024} * 1024;
  double drain_timeout_s = 5;
  std::string metrics;  // --metrics HOST:PORT: HTTP status page and Prometheus metrics ("" off)
  std::string cluster;  // --cluster redis://HOST:PORT: chat across instances ("" off)
  std::string cluster_auth_file;  // --cluster-auth-file: the Redis password's first line
  AccessList access;              // --allow / --deny; refused peers are closed before any data
  // --proxy-protocol: every connection starts with a PROXY v1/v2 header from
  // a load balancer, and the client it names is the peer everywhere (log,
  // --allow/--deny, chat names). Only --trusted-proxy peers may send one.
  bool proxy_protocol = false;
  std::vector<Cidr> trusted_proxies;
  double proxy_timeout_s = 3;  // the spec asks receivers to wait at least 3 s
  // --tls-cert / --tls-key: every client speaks TLS (after the PROXY header,
  // when there is one). Message text is then never logged, only sizes.
  std::string tls_cert;
  std::string tls_key;
  // A client gets this long to complete its handshake (the connection's
  // handshake timeout), so that connections that never finish one cannot pile up.
  double tls_handshake_timeout_s = 10;
  unsigned unix_mode = 0;  // --unix-mode: a Unix socket file's permissions (0: the umask's)
};

const char* to_string(ServeMode mode);
const char* to_string(Framing framing);

class ChatCluster;
class ChatRoom;
class MetricsServer;

class ServeApp {
 public:
  // `tls`: the server context built from --tls-cert/--tls-key, if given.
  ServeApp(EventLoop* loop, ServeOptions options, std::optional<TlsContext> tls = std::nullopt);
  ~ServeApp();

  // Binds every address `host` names. The error names the address.
  Result<void> listen(const std::vector<Endpoint>& addresses);
  // Serves --metrics on each address; call before start().
  Result<void> listen_metrics(const std::vector<Endpoint>& addresses);
  // Chat mode: relays lines through the Redis at `redis` (named `label` in
  // the log) to other instances; call before start().
  void join_cluster(std::string label, std::vector<Endpoint> redis, RedisAuth auth);
  Result<void> start();
  // First SIGINT/SIGTERM: stop accepting, drain, then quit the loop.
  void begin_stop();

 private:
  struct Session;

  void on_connection(const TcpConnectionPtr& conn);
  void on_message(const TcpConnectionPtr& conn, Buffer& in);
  void handle_message(const TcpConnectionPtr& conn, Session* session, std::string_view message);
  void handle_chat_line(const TcpConnectionPtr& conn, std::string_view line);
  // Why a /nick (in the wire encoding) is refused, or nullopt.
  std::optional<std::string> check_nick(std::string_view wire) const;
  // A message as UTF-8 for the log, a character split across reads joined.
  std::string log_text(Session* session, std::string_view message);
  void send_framed(const TcpConnectionPtr& conn, std::string_view payload);
  // Closes `conn` if its PROXY header has not come in --proxy-timeout.
  void arm_proxy_deadline(const TcpConnectionPtr& conn, Session& session);
  // --tls: logs the version, cipher and server name a client agreed on.
  void log_handshake(const TcpConnectionPtr& conn);
  // Sends to the local chat members and counts the lines for the metrics.
  void broadcast_chat(std::string_view line, const TcpConnectionPtr& except);
  void count_disconnect(const TcpConnectionPtr& conn);
  // Closed by the drain of a stopping server, not by the client.
  bool stopped_by_us(CloseReason kind) const;
  // PROXY protocol: the header is read before anything else is served.
  void await_proxy_header(const TcpConnectionPtr& conn, Session& session);
  // Consumes the header from `in`; true once it is in and bytes remain to serve.
  bool pass_proxy_header(const TcpConnectionPtr& conn, Buffer& in);
  // The connect log line and the chat join, once the client's address is known.
  void admit(const TcpConnectionPtr& conn, Session* session, int64_t clients);
  // Closes a connection on our initiative; `label` counts it in the metrics,
  // `note` is what its log line says.
  void reject(const TcpConnectionPtr& conn, Session& session, std::error_code code,
              std::string label, std::string note);
  // The same for a client refused before it is served ("refused: WHY").
  void refuse(const TcpConnectionPtr& conn, Session& session, std::string label,
              std::string_view why);
  // The client's address as the log shows it: from the PROXY header if any.
  std::string peer_name(const TcpConnectionPtr& conn);
  std::string close_text(const TcpConnectionPtr& conn) const;
  std::string clients_json() const;
  bool log_connections() const { return !options_.quiet; }
  // Ack mode logs each message, decoded from the wire encoding.
  bool logs_messages() const { return log_connections() && options_.mode == ServeMode::ack; }
  // A Session is kept only for the PROXY header or the message decoder.
  bool needs_session() const { return options_.proxy_protocol || logs_messages(); }
  // The open clients are listed only for the metrics and the status page.
  bool tracks_clients() const { return metrics_server_ != nullptr; }

  EventLoop* loop_;
  const ServeOptions options_;
  Logger log_;
  std::shared_ptr<const TlsContext> tls_;  // --tls-cert/--tls-key; null: plain
  TcpServer server_;
  std::unique_ptr<ChatRoom> room_;
  ServeMetrics metrics_;
  ClientRegistry registry_;
  // Declared after what they use, so they are destroyed first.
  std::unique_ptr<ChatCluster> cluster_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::string encoded_reply_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> served_{0};
  std::atomic<int64_t> clients_{0};  // counted here so each log line carries its own count
  std::atomic<uint64_t> bytes_in_{0};
  std::atomic<uint64_t> bytes_out_{0};
};

}  // namespace tcpkit::cli

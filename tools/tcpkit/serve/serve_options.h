// ServeOptions: what the flags of `tcpkit serve` ask for (serve_cmd.cpp fills
// it in), read by ServeApp, its stages and its modes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/logger.h"
#include "tcpkit/cidr.h"
#include "tcpkit/io_backend.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

enum class ServeMode { ack, echo, discard, chat };
enum class Framing { raw, line, length };

struct ServeOptions {
  IoBackend io_backend = IoBackend::kDefault;  // --io-backend
  int busy_poll_us = 0;                        // --busy-poll: microseconds each loop spins
  std::string host = "127.0.0.1";
  uint16_t port = 8888;
  ServeMode mode = ServeMode::ack;
  std::string reply = "收到了你的訊息";
  Framing framing = Framing::raw;
  std::string encoding = "utf-8";
  size_t max_message = size_t{1024} * 1024;
  // --chat-rate: lines a second each chat member may send to the room after
  // a burst of as many; a line of more than 1 KiB counts one per started
  // KiB. 0: no limit.
  uint32_t chat_rate = 20;
  int threads = 0;
  size_t max_conns = 0;
  double idle_timeout_s = 0;
  bool reuse_port = false;
  // --splice: whether echo mode moves a bulk client's bytes inside the
  // kernel (auto: for a client on another host).
  EchoSplice splice = EchoSplice::remote;
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

}  // namespace tcpkit::cli

// BenchRunner: the load generator behind `tcpkit bench`.
//
// Owned by bench_cmd.cpp in the main thread. It runs one EventLoop per
// worker thread, each driving its share of the connections through the
// library's own TcpClient/TcpConnection, and collects per-thread counters
// and histograms that the main thread merges at the end. Counters the live
// line reads while the run goes on are relaxed atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/histogram.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/io_backend.h"
#include "tcpkit/result.h"
#include "tcpkit/tls_context.h"

namespace tcpkit::cli {

enum class BenchMode { pingpong, connrate, stream };

struct BenchOptions {
  std::string host;
  uint16_t port = 0;
  BenchMode mode = BenchMode::pingpong;
  int conns = 1;
  size_t size = 4096;
  double duration_s = 5;
  int threads = 1;
  double rate = 0;  // messages per second over all connections; 0: closed loop
  double connect_timeout_s = 5;
  bool live = false;
  IoBackend io_backend = IoBackend::kDefault;  // the client threads' loops
  // --busy-poll: each client loop looks for events without sleeping for up
  // to this long before it sleeps (EventLoop::set_busy_poll); 0: no spin.
  int busy_poll_us = 0;
  // --tls: every connection speaks TLS; a connection counts as up once its
  // handshake is done (so connrate measures connect + handshake).
  std::shared_ptr<const TlsContext> tls;
};

struct BenchResult {
  double seconds = 0;        // the measured window
  uint64_t messages = 0;     // completed round trips (pingpong), exchanges (connrate)
  uint64_t bytes = 0;        // payload bytes: echoed (pingpong) or sent (stream)
  uint64_t connections = 0;  // connections established in the window
  uint64_t mismatched_bytes = 0;
  uint64_t lost_bytes = 0;
  uint64_t refused = 0;
  uint64_t reset = 0;
  uint64_t connect_failed = 0;
  uint64_t tls_failed = 0;  // handshakes that failed
  std::string tls_error;    // the first one's reason
  int connected_at_start = 0;
  LatencyHistogram latency;  // round trip (pingpong), connect (connrate)
  // With --busy-poll: the seconds the client loops spun without finding an
  // event, over the whole run (connecting included), summed over threads:
  // the part of the client's CPU time that did no work.
  double busy_poll_idle_s = 0;
};

struct Worker;

class BenchRunner {
 public:
  BenchRunner(BenchOptions options, Endpoint target);
  ~BenchRunner();
  // Runs the whole benchmark; blocks for about connect time + duration.
  // Fails only when a worker's event loop cannot be created.
  Result<BenchResult> run();

 private:
  void print_live(double elapsed, uint64_t messages, uint64_t bytes, uint64_t errors, int conns);

  BenchOptions options_;
  Endpoint target_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace tcpkit::cli

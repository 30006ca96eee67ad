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
#include <optional>
#include <string>
#include <vector>

#include "bench/histogram.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/io_backend.h"
#include "tcpkit/result.h"
#include "tcpkit/tls_context.h"

namespace tcpkit::cli {

enum class BenchMode { pingpong, connrate, stream };

// --rate's range, messages per second over all connections (0 is the
// closed loop): below it a connection would wait longer than any run, above
// it no client on one machine keeps up.
constexpr double kMinRate = 0.001;
constexpr double kMaxRate = 1e8;

// Open loop: a message due on a connection is not sent (it counts as
// missed) while the connection holds this many bytes unsent, or this many
// messages sent and not yet echoed. A server that falls behind then costs
// the client bounded memory, whatever the rate and the duration.
constexpr size_t kMaxUnsentBytes = size_t{1} << 20;
constexpr uint32_t kMaxInFlight = uint32_t{1} << 16;

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

// The first byte that was not what the stream holds.
struct Mismatch {
  int connection = 0;   // which connection, counted from 0
  uint64_t offset = 0;  // the byte's position in that connection's stream
  int expected = -1;    // the stream's byte there; -1: none was owed (an extra byte)
  int got = 0;
  // The received bytes from there on are the stream's `shift` bytes further
  // on (shift > 0: that many bytes missing) or back (< 0: repeated), modulo
  // the pattern's period; 0: no such shift was found.
  int shift = 0;
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
  int threads = 0;            // client threads used: --threads, at most one per connection
  uint64_t missed_sends = 0;  // open loop: messages due that were not sent (server behind)
  std::optional<Mismatch> first_mismatch;
  std::string connect_error;  // why the first connect that failed failed
  std::string close_error;    // why the first connection closed mid-run
  // Pingpong: messages sent by the end of the window and still unanswered
  // then, and how long the oldest of them had waited by then. Their ages
  // are in `latency` too (a round trip at least that long), so a server
  // that stops answering cannot hide its stall. Stream: the messages the
  // server had not taken all of by then (one per connection at most), and
  // how long the oldest had been queued.
  uint64_t unanswered = 0;
  uint64_t oldest_unanswered_ns = 0;
  int interrupted_by = 0;    // the signal that ended the run early; 0: none
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

// ServeCounters: the counters of `tcpkit serve`, and render_metrics(), which
// writes them out in Prometheus' text exposition format (version 0.0.4) for
// `--metrics`.
//
// Counters split by a reason label keep their well-known reasons in a fixed
// atomic array and only unexpected ones (an unusual errno) in a map under a
// mutex.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tcpkit::cli {

// A counter per label value; any thread.
class LabeledCounter {
 public:
  // `known` values are always exported, zero or not, so dashboards see them
  // before the first event.
  explicit LabeledCounter(std::vector<std::string> known);

  void add(std::string_view label, uint64_t n = 1);
  // Every label with its count, known ones first, in a stable order.
  std::vector<std::pair<std::string, uint64_t>> snapshot() const;

 private:
  const std::vector<std::string> known_;
  std::unique_ptr<std::atomic<uint64_t>[]> known_counts_;
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t, std::less<>> others_;  // guarded by mutex_
};

// The traffic of `tcpkit serve`, as a scrape shows it: the clients open now
// and the bytes moved, open connections included (see ClientRegistry).
struct TrafficSnapshot {
  uint64_t open = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
};

// The one set of counters of `tcpkit serve`: the log lines, the metrics and
// the status page all read them (ServeObserver counts into them).
//
// Every I/O loop counts at once: plain counters are relaxed atomics (one
// uncontended add per event, no ordering needed: a scrape only has to see
// each count eventually); the open count is sequentially consistent, so
// that each connect and disconnect line carries its own count.
class ServeCounters {
 public:
  ServeCounters();

  // A client accepted and served; returns how many are open now.
  int64_t count_connection() {
    connections_.fetch_add(1, std::memory_order_relaxed);
    return open_.fetch_add(1) + 1;
  }
  // A served client gone; returns how many are still open.
  int64_t count_close() { return open_.fetch_sub(1) - 1; }
  // A closed connection's final byte totals.
  void count_closed_bytes(uint64_t received, uint64_t sent) {
    closed_bytes_received_.fetch_add(received, std::memory_order_relaxed);
    closed_bytes_sent_.fetch_add(sent, std::memory_order_relaxed);
  }
  void count_messages_received(uint64_t n = 1) {
    messages_in_.fetch_add(n, std::memory_order_relaxed);
  }
  void count_messages_sent(uint64_t n = 1) {
    messages_out_.fetch_add(n, std::memory_order_relaxed);
  }
  // `reason` is a short label such as "peer closed"; `error` also counts it
  // in tcpkit_errors_total.
  void count_disconnect(std::string_view reason, bool error);
  void count_refused(std::string_view reason) { refused_.add(reason); }

  uint64_t connections() const { return connections_.load(std::memory_order_relaxed); }
  uint64_t open() const { return static_cast<uint64_t>(std::max<int64_t>(open_.load(), 0)); }
  uint64_t closed_bytes_received() const {
    return closed_bytes_received_.load(std::memory_order_relaxed);
  }
  uint64_t closed_bytes_sent() const { return closed_bytes_sent_.load(std::memory_order_relaxed); }
  uint64_t messages_received() const { return messages_in_.load(std::memory_order_relaxed); }
  uint64_t messages_sent() const { return messages_out_.load(std::memory_order_relaxed); }
  const LabeledCounter& disconnects() const { return disconnects_; }
  const LabeledCounter& errors() const { return errors_; }
  const LabeledCounter& refused() const { return refused_; }

 private:
  std::atomic<uint64_t> connections_{0};
  std::atomic<int64_t> open_{0};
  std::atomic<uint64_t> closed_bytes_received_{0};
  std::atomic<uint64_t> closed_bytes_sent_{0};
  std::atomic<uint64_t> messages_in_{0};
  std::atomic<uint64_t> messages_out_{0};
  LabeledCounter disconnects_;
  LabeledCounter errors_;
  LabeledCounter refused_;
};

// The whole exposition: every family with its # HELP and # TYPE lines;
// `mode` ("ack", "chat", ...) becomes the `mode` label of every sample.
std::string render_metrics(std::string_view mode, const ServeCounters& counters,
                           const TrafficSnapshot& traffic);

// Escapes a label value as the text format requires: \\, \" and \n.
std::string prometheus_label_escape(std::string_view value);

}  // namespace tcpkit::cli

// ServeMetrics: the counters of `tcpkit serve`, written out in Prometheus'
// text exposition format (version 0.0.4) for `--metrics`.
//
// Owned by ServeApp. Every I/O loop counts into it at once: plain counters
// are relaxed atomics (one uncontended add per event, no ordering needed:
// a scrape only has to see each count eventually). Counters split by a
// reason label keep their well-known reasons in a fixed atomic array and
// only unexpected ones (an unusual errno) in a map under a mutex.
#pragma once

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

// What only the list of open connections knows: how many there are and how
// many bytes moved, closed connections included (see ClientRegistry).
struct TrafficSnapshot {
  uint64_t open = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
};

class ServeMetrics {
 public:
  // `mode` ("ack", "chat", ...) becomes the `mode` label of every sample.
  explicit ServeMetrics(std::string mode);

  void count_connection() { connections_.fetch_add(1, std::memory_order_relaxed); }
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

  // The whole exposition: every family with its # HELP and # TYPE lines.
  std::string render(const TrafficSnapshot& traffic) const;

 private:
  const std::string mode_;
  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> messages_in_{0};
  std::atomic<uint64_t> messages_out_{0};
  LabeledCounter disconnects_;
  LabeledCounter errors_;
  LabeledCounter refused_;
};

// Escapes a label value as the text format requires: \\, \" and \n.
std::string prometheus_label_escape(std::string_view value);

}  // namespace tcpkit::cli

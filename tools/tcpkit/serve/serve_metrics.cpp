#include "serve/serve_metrics.h"

#include <fmt/core.h>

namespace tcpkit::cli {

LabeledCounter::LabeledCounter(std::vector<std::string> known)
    : known_(std::move(known)),
      known_counts_(std::make_unique<std::atomic<uint64_t>[]>(known_.size())) {}

void LabeledCounter::add(std::string_view label, uint64_t n) {
  // A handful of short compares: cheaper than hashing, and this runs once
  // per disconnect, not per byte.
  for (size_t i = 0; i < known_.size(); ++i) {
    if (known_[i] == label) {
      known_counts_[i].fetch_add(n, std::memory_order_relaxed);
      return;
    }
  }
  std::lock_guard lock(mutex_);
  auto it = others_.find(label);
  if (it == others_.end()) it = others_.emplace(std::string(label), 0).first;
  it->second += n;
}

std::vector<std::pair<std::string, uint64_t>> LabeledCounter::snapshot() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(known_.size());
  for (size_t i = 0; i < known_.size(); ++i) {
    out.emplace_back(known_[i], known_counts_[i].load(std::memory_order_relaxed));
  }
  std::lock_guard lock(mutex_);
  for (const auto& [label, count] : others_) out.emplace_back(label, count);
  return out;
}

std::string prometheus_label_escape(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

ServeMetrics::ServeMetrics(std::string mode)
    : mode_(std::move(mode)),
      disconnects_({"peer closed", "connection reset", "idle timeout", "message too large",
                    "slow reader", "server stopping"}),
      errors_({"connection reset", "message too large", "slow reader"}),
      refused_({"too many connections", "not allowed", "untrusted proxy"}) {}

void ServeMetrics::count_disconnect(std::string_view reason, bool error) {
  disconnects_.add(reason);
  if (error) errors_.add(reason);
}

namespace {

// Appends one metric family: its HELP and TYPE lines, then its samples.
class Exposition {
 public:
  explicit Exposition(std::string_view mode) : mode_(prometheus_label_escape(mode)) {}

  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(std::string_view name, uint64_t value) {
    out_ += fmt::format("{}{{mode=\"{}\"}} {}\n", name, mode_, value);
  }
  void labeled(std::string_view name, std::string_view label, const LabeledCounter& counter) {
    for (const auto& [value, count] : counter.snapshot()) {
      out_ += fmt::format("{}{{mode=\"{}\",{}=\"{}\"}} {}\n", name, mode_, label,
                          prometheus_label_escape(value), count);
    }
  }
  std::string take() { return std::move(out_); }

 private:
  const std::string mode_;
  std::string out_;
};

}  // namespace

std::string ServeMetrics::render(const TrafficSnapshot& traffic) const {
  Exposition e(mode_);
  e.family("tcpkit_connections_open", "gauge", "Clients connected now.");
  e.sample("tcpkit_connections_open", traffic.open);
  e.family("tcpkit_connections_total", "counter", "Clients accepted and served since start.");
  e.sample("tcpkit_connections_total", connections_.load(std::memory_order_relaxed));
  e.family("tcpkit_bytes_received_total", "counter", "Bytes read from clients.");
  e.sample("tcpkit_bytes_received_total", traffic.bytes_received);
  e.family("tcpkit_bytes_sent_total", "counter", "Bytes written to clients.");
  e.sample("tcpkit_bytes_sent_total", traffic.bytes_sent);
  e.family("tcpkit_messages_received_total", "counter",
           "Messages read from clients (lines, frames, or reads in raw framing).");
  e.sample("tcpkit_messages_received_total", messages_in_.load(std::memory_order_relaxed));
  e.family("tcpkit_messages_sent_total", "counter",
           "Messages queued to clients (replies, chat lines, echoes).");
  e.sample("tcpkit_messages_sent_total", messages_out_.load(std::memory_order_relaxed));
  e.family("tcpkit_disconnects_total", "counter", "Clients gone, by reason.");
  e.labeled("tcpkit_disconnects_total", "reason", disconnects_);
  e.family("tcpkit_errors_total", "counter", "Clients lost to an error, by reason.");
  e.labeled("tcpkit_errors_total", "reason", errors_);
  e.family("tcpkit_refused_total", "counter", "Clients accepted and closed at once, by reason.");
  e.labeled("tcpkit_refused_total", "reason", refused_);
  return e.take();
}

}  // namespace tcpkit::cli

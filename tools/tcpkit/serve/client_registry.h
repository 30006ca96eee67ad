// ClientRegistry: the clients `tcpkit serve` has open right now, for the
// metrics byte totals and the live status page.
//
// Owned by ServeObserver, only with --metrics; it keeps no counters of its
// own: the closed connections' bytes are folded into ServeCounters under its
// lock. I/O loops add and remove their connections, the metrics
// server (base loop) reads snapshots, so everything is under one mutex —
// taken once per connect and disconnect, never per message. Byte counts are
// read from the connections themselves (TcpConnection's counters may be read
// from any thread), so nothing is counted twice per read or write.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "serve/serve_metrics.h"
#include "tcpkit/callbacks.h"

namespace tcpkit::cli {

struct ClientInfo {
  uint64_t id = 0;
  std::string peer;  // "127.0.0.1:50312"
  std::string name;  // the chat name, "" outside chat mode
  std::chrono::system_clock::time_point since;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
};

class ClientRegistry {
 public:
  void add(const TcpConnectionPtr& conn);
  // The client's address when it is not the socket's peer (a PROXY header
  // named the real client); otherwise the socket's peer is shown.
  void set_peer(const TcpConnectionPtr& conn, std::string peer);
  // Folds the connection's final byte counts into `totals`, under the lock
  // that traffic() reads them under.
  void remove(const TcpConnectionPtr& conn, ServeCounters& totals);

  // Open count (from `totals`) and byte totals; closed and open connections
  // are summed under one lock, so a connection closing meanwhile is counted
  // exactly once.
  TrafficSnapshot traffic(const ServeCounters& totals) const;
  // At most `limit` clients, oldest first; `name_of` supplies chat names and
  // is called without the lock held.
  std::vector<ClientInfo> clients(
      size_t limit, const std::function<std::string(const TcpConnectionPtr&)>& name_of) const;
  size_t size() const;

 private:
  // Small on purpose: one per open client. The address is formatted when a
  // page asks for it.
  struct Entry {
    TcpConnectionPtr conn;
    std::chrono::system_clock::time_point since;
  };
  mutable std::mutex mutex_;
  std::map<uint64_t, Entry> open_;               // by connection id, which grows: oldest first
  std::map<uint64_t, std::string> named_peers_;  // set_peer(): clients behind a PROXY header
};

// {"open": N, "clients": [{"peer": ..., "name": ..., "since": ..., ...}]};
// `open` may exceed the rows shown.
std::string clients_json(const std::vector<ClientInfo>& clients, size_t open);

}  // namespace tcpkit::cli

#include "serve/client_registry.h"

#include <fmt/core.h>

#include <ctime>

#include "common/json_writer.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

void ClientRegistry::add(const TcpConnectionPtr& conn) {
  std::lock_guard lock(mutex_);
  open_[conn->id()] = Entry{conn, std::chrono::system_clock::now()};
}

void ClientRegistry::set_peer(const TcpConnectionPtr& conn, std::string peer) {
  std::lock_guard lock(mutex_);
  if (open_.count(conn->id()) != 0) named_peers_[conn->id()] = std::move(peer);
}

void ClientRegistry::remove(const TcpConnectionPtr& conn, ServeCounters& totals) {
  std::lock_guard lock(mutex_);
  if (open_.erase(conn->id()) == 0) return;
  named_peers_.erase(conn->id());
  totals.count_closed_bytes(conn->bytes_received(), conn->bytes_sent());
}

TrafficSnapshot ClientRegistry::traffic(const ServeCounters& totals) const {
  std::lock_guard lock(mutex_);
  TrafficSnapshot t;
  t.open = totals.open();
  t.bytes_received = totals.closed_bytes_received();
  t.bytes_sent = totals.closed_bytes_sent();
  for (const auto& [id, entry] : open_) {
    t.bytes_received += entry.conn->bytes_received();
    t.bytes_sent += entry.conn->bytes_sent();
  }
  return t;
}

std::vector<ClientInfo> ClientRegistry::clients(
    size_t limit, const std::function<std::string(const TcpConnectionPtr&)>& name_of) const {
  std::vector<std::pair<ClientInfo, TcpConnectionPtr>> picked;
  {
    std::lock_guard lock(mutex_);
    picked.reserve(std::min(limit, open_.size()));
    for (const auto& [id, entry] : open_) {
      if (picked.size() == limit) break;
      ClientInfo info;
      info.id = id;
      auto named = named_peers_.find(id);
      if (named != named_peers_.end()) info.peer = named->second;
      info.since = entry.since;
      picked.emplace_back(std::move(info), entry.conn);
    }
  }
  std::vector<ClientInfo> out;
  out.reserve(picked.size());
  for (auto& [info, conn] : picked) {
    if (info.peer.empty()) info.peer = conn->peer_endpoint().to_string();
    if (name_of) info.name = name_of(conn);
    info.bytes_received = conn->bytes_received();
    info.bytes_sent = conn->bytes_sent();
    out.push_back(std::move(info));
  }
  return out;
}

size_t ClientRegistry::size() const {
  std::lock_guard lock(mutex_);
  return open_.size();
}

namespace {

// "2026-11-26T01:02:03Z": UTC, so the page can show it in the viewer's zone.
std::string utc_iso8601(std::chrono::system_clock::time_point t) {
  std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

std::string clients_json(const std::vector<ClientInfo>& clients, size_t open) {
  Json list = Json::array();
  for (const auto& c : clients) {
    list.push_back({{"id", c.id},
                    {"peer", c.peer},
                    {"name", c.name},
                    {"since", utc_iso8601(c.since)},
                    {"bytes_in", c.bytes_received},
                    {"bytes_out", c.bytes_sent}});
  }
  return json_text({{"open", open}, {"clients", std::move(list)}}) + "\n";
}

}  // namespace tcpkit::cli

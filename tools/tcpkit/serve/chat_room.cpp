#include "serve/chat_room.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {
namespace {

// Names that differ only in ASCII case are one name, as on IRC.
bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

std::vector<TcpConnectionPtr> ChatRoom::join(const TcpConnectionPtr& conn, std::string name) {
  std::lock_guard lock(mutex_);
  std::vector<TcpConnectionPtr> before = members_except(conn);
  members_[conn->id()] = Member{conn, std::move(name)};
  return before;
}

ChatRoom::Departure ChatRoom::leave(const TcpConnectionPtr& conn) {
  std::lock_guard lock(mutex_);
  auto it = members_.find(conn->id());
  if (it == members_.end()) return {};
  Departure gone{std::move(it->second.name), {}};
  members_.erase(it);
  gone.others = members_except(nullptr);
  return gone;
}

std::optional<std::string> ChatRoom::rename(const TcpConnectionPtr& conn, std::string name) {
  std::lock_guard lock(mutex_);
  auto it = members_.find(conn->id());
  if (it == members_.end()) return std::string();
  for (const auto& [id, member] : members_) {
    if (id != conn->id() && same_name(member.name, name)) return std::nullopt;
  }
  std::swap(it->second.name, name);
  return name;
}

std::string ChatRoom::name_of(const TcpConnectionPtr& conn) const {
  std::lock_guard lock(mutex_);
  auto it = members_.find(conn->id());
  return it == members_.end() ? std::string() : it->second.name;
}

size_t ChatRoom::broadcast(std::string_view line, const TcpConnectionPtr& except) {
  std::vector<TcpConnectionPtr> targets;
  {
    std::lock_guard lock(mutex_);
    targets = members_except(except);
  }
  return send_to(targets, line);
}

size_t ChatRoom::send_to(const std::vector<TcpConnectionPtr>& targets, std::string_view line) {
  // A slow member is dropped by its own high-water mark (close policy);
  // everybody else keeps receiving.
  for (const auto& conn : targets) conn->send(line);
  return targets.size();
}

std::vector<TcpConnectionPtr> ChatRoom::members_except(const TcpConnectionPtr& except) const {
  std::vector<TcpConnectionPtr> targets;
  targets.reserve(members_.size());
  for (const auto& [id, m] : members_) {
    if (m.conn != except) targets.push_back(m.conn);
  }
  return targets;
}

}  // namespace tcpkit::cli

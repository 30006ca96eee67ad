#include "serve/chat_room.h"

#include <vector>

#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

size_t ChatRoom::join(const TcpConnectionPtr& conn, std::string name) {
  std::lock_guard lock(mutex_);
  members_[conn->id()] = Member{conn, std::move(name)};
  return members_.size();
}

std::string ChatRoom::leave(const TcpConnectionPtr& conn) {
  std::lock_guard lock(mutex_);
  auto it = members_.find(conn->id());
  if (it == members_.end()) return "";
  std::string name = std::move(it->second.name);
  members_.erase(it);
  return name;
}

std::string ChatRoom::rename(const TcpConnectionPtr& conn, std::string name) {
  std::lock_guard lock(mutex_);
  auto it = members_.find(conn->id());
  if (it == members_.end()) return "";
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
    targets.reserve(members_.size());
    for (const auto& [id, m] : members_) {
      if (m.conn != except) targets.push_back(m.conn);
    }
  }
  // A slow member is dropped by its own high-water mark (close policy);
  // everybody else keeps receiving.
  for (const auto& conn : targets) conn->send(line);
  return targets.size();
}

}  // namespace tcpkit::cli

#include "serve/chat_room.h"

#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {
namespace {

// Names that differ only in ASCII case are one name, as on IRC.
std::string folded(std::string_view name) {
  std::string out(name);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && folded(a) == folded(b);
}

// "1234-0123456789abcdef" (pid, random) -> "012345": enough to tell the
// instances of one room apart. The cluster passes only ids of that shape
// (is_instance_id()); the tag still takes nothing but ASCII letters and
// digits, so that it can never carry a control byte or cut a character.
std::string instance_tag(std::string_view instance) {
  const size_t dash = instance.find('-');
  std::string tag;
  for (char c : instance.substr(dash == std::string_view::npos ? 0 : dash + 1)) {
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (tag.size() == 6 || !alnum) break;
    tag += c;
  }
  return tag.empty() ? std::string("?") : tag;
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
  if (held_elsewhere(name, "", std::chrono::steady_clock::now())) return std::nullopt;
  std::swap(it->second.name, name);
  return name;
}

std::string ChatRoom::relayed_name(std::string name, std::string_view instance,
                                   std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mutex_);
  forget_expired(now);
  const bool held_here = std::any_of(members_.begin(), members_.end(),
                                     [&](const auto& m) { return same_name(m.second.name, name); });
  if (held_here || held_elsewhere(name, instance, now))
    return fmt::format("{}@{}", name, instance_tag(instance));
  std::string key = folded(name);
  if (auto it = remote_names_.find(key); it != remote_names_.end()) {
    it->second.instance.assign(instance);
    it->second.last_used = now;
    remote_names_by_use_.splice(remote_names_by_use_.end(), remote_names_by_use_,
                                it->second.in_use_order);
    return name;
  }
  // Full of names used within the TTL: this one is shown but not held.
  if (remote_names_.size() >= kMaxRemoteNames) return name;
  auto order = remote_names_by_use_.insert(remote_names_by_use_.end(), key);
  remote_names_.emplace(std::move(key), RemoteName{std::string(instance), now, order});
  return name;
}

size_t ChatRoom::remote_names_remembered() const {
  std::lock_guard lock(mutex_);
  return remote_names_.size();
}

void ChatRoom::forget_expired(std::chrono::steady_clock::time_point now) {
  while (!remote_names_by_use_.empty()) {
    auto it = remote_names_.find(remote_names_by_use_.front());
    if (now - it->second.last_used < kRemoteNameTtl) return;
    remote_names_.erase(it);
    remote_names_by_use_.pop_front();
  }
}

bool ChatRoom::held_elsewhere(std::string_view name, std::string_view instance,
                              std::chrono::steady_clock::time_point now) const {
  auto it = remote_names_.find(folded(name));
  return it != remote_names_.end() && it->second.instance != instance &&
         now - it->second.last_used < kRemoteNameTtl;
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

// ChatRoom: the members of `serve --mode chat` and the lines between them.
//
// Owned by ServeApp; used from every I/O loop at once, so membership is
// guarded by a mutex. Sending goes through TcpConnection::send, which is
// safe from any thread (and encrypts for a TLS member); the lock is not held
// while sending.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tcpkit/callbacks.h"

namespace tcpkit::cli {

class ChatRoom {
 public:
  // Adds a member under `name`; returns the members who were there before
  // it, read in the same step, so that the notice of this join reaches
  // exactly them: nobody who joins a moment later hears of an earlier join.
  std::vector<TcpConnectionPtr> join(const TcpConnectionPtr& conn, std::string name);
  // Removes a member; returns its last name ("" if it was not a member) and
  // the members left behind, read in the same step.
  struct Departure {
    std::string name;
    std::vector<TcpConnectionPtr> others;
  };
  Departure leave(const TcpConnectionPtr& conn);
  // Renames a member; returns the old name, or nullopt (and renames
  // nothing) when another member goes by `name` (ASCII case ignored), be it
  // a nick or the address:port a member starts with, or a member of another
  // instance used it lately (relayed_name()).
  std::optional<std::string> rename(const TcpConnectionPtr& conn, std::string name);
  // With --cluster: the name to show for a line relayed from `instance`
  // under `name`. It is `name`, remembered as that instance's for
  // kRemoteNameTtl; or "name@TAG" (TAG from the instance's id) when a local
  // member goes by it or another instance used it within that time, so that
  // nobody's line shows under a name someone else holds. Tests pass their
  // own `now`.
  std::string relayed_name(
      std::string name, std::string_view instance,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  // How many names of other instances are remembered: those used within
  // kRemoteNameTtl, at most kMaxRemoteNames.
  size_t remote_names_remembered() const;
  static constexpr std::chrono::minutes kRemoteNameTtl{10};
  static constexpr size_t kMaxRemoteNames = 4096;
  std::string name_of(const TcpConnectionPtr& conn) const;
  // Sends `line` (which ends in "\n") to every member but `except` (may be
  // null); returns to how many.
  size_t broadcast(std::string_view line, const TcpConnectionPtr& except);
  // Sends `line` to each of `targets`; returns to how many.
  static size_t send_to(const std::vector<TcpConnectionPtr>& targets, std::string_view line);

 private:
  // Every member but `except`; the caller holds mutex_.
  std::vector<TcpConnectionPtr> members_except(const TcpConnectionPtr& except) const;

  // Whether a member of another instance than `instance` ("" for this one)
  // used `name` within kRemoteNameTtl; the caller holds mutex_.
  bool held_elsewhere(std::string_view name, std::string_view instance,
                      std::chrono::steady_clock::time_point now) const;

  // Forgets the names of other instances unused for kRemoteNameTtl; the
  // caller holds mutex_.
  void forget_expired(std::chrono::steady_clock::time_point now);

  struct Member {
    TcpConnectionPtr conn;
    std::string name;
  };
  struct RemoteName {
    std::string instance;
    std::chrono::steady_clock::time_point last_used;
    std::list<std::string>::iterator in_use_order;
  };
  mutable std::mutex mutex_;
  std::map<uint64_t, Member> members_;  // by connection id
  // Names heard from other instances, by their ASCII lower case, and the
  // same keys from the least lately used to the last used: the expired ones
  // are at the front, so each relayed line forgets them at little cost and
  // memory follows the names remembered.
  std::unordered_map<std::string, RemoteName> remote_names_;
  std::list<std::string> remote_names_by_use_;
};

}  // namespace tcpkit::cli

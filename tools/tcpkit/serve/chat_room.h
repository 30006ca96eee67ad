// ChatRoom: the members of `serve --mode chat` and the lines between them.
//
// Owned by ServeApp; used from every I/O loop at once, so membership is
// guarded by a mutex. Sending goes through TcpConnection::send, which is
// safe from any thread (and encrypts for a TLS member); the lock is not held
// while sending.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
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
  // a nick or the address:port a member starts with.
  std::optional<std::string> rename(const TcpConnectionPtr& conn, std::string name);
  std::string name_of(const TcpConnectionPtr& conn) const;
  // Sends `line` (which ends in "\n") to every member but `except` (may be
  // null); returns to how many.
  size_t broadcast(std::string_view line, const TcpConnectionPtr& except);
  // Sends `line` to each of `targets`; returns to how many.
  static size_t send_to(const std::vector<TcpConnectionPtr>& targets, std::string_view line);

 private:
  // Every member but `except`; the caller holds mutex_.
  std::vector<TcpConnectionPtr> members_except(const TcpConnectionPtr& except) const;

  struct Member {
    TcpConnectionPtr conn;
    std::string name;
  };
  mutable std::mutex mutex_;
  std::map<uint64_t, Member> members_;  // by connection id
};

}  // namespace tcpkit::cli

// Copy-on-write updates of a shared ConnectionCallbacks table.
//
// Internal. TcpServer, TcpClient and TcpConnection hold their table through
// a shared_ptr to const: tables handed to connections are never modified,
// so a changed callback always goes into a fresh copy.
#pragma once

#include <memory>
#include <type_traits>

#include "tcpkit/callbacks.h"

namespace tcpkit {

// A copy of `table` (an empty table when it is null) whose `member` is
// `cb`; whoever holds `table` keeps it unchanged.
template <typename Callback>
std::shared_ptr<const ConnectionCallbacks> with_callback(
    const std::shared_ptr<const ConnectionCallbacks>& table, Callback ConnectionCallbacks::*member,
    std::type_identity_t<Callback> cb) {
  auto copy = table ? std::make_shared<ConnectionCallbacks>(*table)
                    : std::make_shared<ConnectionCallbacks>();
  (*copy).*member = std::move(cb);
  return copy;
}

}  // namespace tcpkit

// TcpServer's accept filter: a refused peer is closed before a connection
// object exists (no on_connection, no bytes), counted and reported; the
// others are served as usual. Loopback only: 127.0.0.1 vs 127.0.0.2.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "tcpkit/cidr.h"
#include "tcpkit/tcp_server.h"
#include "tcpkit/unique_fd.h"
#include "test_util.h"

using namespace tcpkit;
using namespace tcpkit::test;

namespace {

// A blocking client bound to `source` (a 127.0.0.0/8 address) before it
// connects, so the server sees that address as the peer.
UniqueFd connect_from(const char* source, const Endpoint& server) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &local.sin_addr);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local), 0) << source;
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  EXPECT_EQ(::connect(fd.get(), server.sockaddr_ptr(), server.sockaddr_len()), 0);
  return fd;
}

}  // namespace

TEST(AcceptFilter, RefusedPeerIsClosedBeforeAConnectionExists) {
  AccessList access;
  access.allow(*Cidr::parse("127.0.0.1"));
  ServerHarness h;
  Watched<int> up{0};
  Watched<std::vector<std::pair<std::string, std::error_code>>> refused;
  ServerOptions options;
  options.threads = 1;
  h.start(options, [&](TcpServer& s) {
    s.set_accept_filter([&access](const Endpoint& peer) { return access.permits(peer); });
    s.set_on_refused([&](const Endpoint& peer, std::error_code why) {
      refused.update([&](auto& v) { v.emplace_back(peer.host(), why); });
    });
    s.set_on_connection([&](const TcpConnectionPtr& c) {
      if (c->connected()) up.update([](int& n) { ++n; });
    });
    s.set_on_message(echo);
  });

  auto stranger = connect_from("127.0.0.2", h.address());
  // The server closes it without reading: the client sees EOF, not a hang
  // (its send may still land in the kernel before the close, hence no send).
  char byte = 0;
  EXPECT_EQ(::recv(stranger.get(), &byte, 1, 0), 0);
  ASSERT_TRUE(refused.wait([](const auto& v) { return v.size() == 1; }));
  EXPECT_EQ(refused.get().at(0).first, "127.0.0.2");
  EXPECT_EQ(refused.get().at(0).second, make_error_code(Errc::not_allowed));

  auto friend_fd = connect_from("127.0.0.1", h.address());
  const std::string msg = "allowed";
  ASSERT_EQ(::send(friend_fd.get(), msg.data(), msg.size(), 0), static_cast<ssize_t>(msg.size()));
  std::string got(msg.size(), '\0');
  ASSERT_EQ(::recv(friend_fd.get(), got.data(), got.size(), MSG_WAITALL),
            static_cast<ssize_t>(msg.size()));
  EXPECT_EQ(got, msg);

  auto stats = h.server().stats();
  EXPECT_EQ(stats.accepted, 2u);
  EXPECT_EQ(stats.refused_by_filter, 1u);
  EXPECT_EQ(stats.refused_over_limit, 0u);
  EXPECT_EQ(up.get(), 1);  // the stranger never reached on_connection
  friend_fd.reset();
  stranger.reset();
  h.finish();
}

TEST(AcceptFilter, NoFilterServesEveryone) {
  ServerHarness h;
  h.start({}, [](TcpServer& s) { s.set_on_message(echo); });
  auto other = connect_from("127.0.0.2", h.address());
  ASSERT_EQ(::send(other.get(), "x", 1, 0), 1);
  char byte = 0;
  ASSERT_EQ(::recv(other.get(), &byte, 1, 0), 1);
  EXPECT_EQ(byte, 'x');
  EXPECT_EQ(h.server().stats().refused_by_filter, 0u);
  other.reset();
  h.finish();
}

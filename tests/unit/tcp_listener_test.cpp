#include "tcpkit/tcp_listener.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tcpkit/tcp_stream.h"

using namespace std::chrono_literals;
using tcpkit::Endpoint;
using tcpkit::ListenOptions;
using tcpkit::TcpListener;
using tcpkit::TcpStream;

namespace {

constexpr auto kWait = 5s;

// True when /proc/net/tcp (IPv4) lists a socket in TIME_WAIT with local port `port`.
bool has_time_wait_on_port(uint16_t port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  char want[8];
  std::snprintf(want, sizeof want, ":%04X", port);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    // State 06 is TCP_TIME_WAIT in include/net/tcp_states.h.
    if (state == "06" && local.size() >= 5 && local.compare(local.size() - 5, 5, want) == 0)
      return true;
  }
  return false;
}

// Waits (bounded) for the kernel to move the socket to TIME_WAIT; on loopback
// this normally has already happened when close() returns.
bool wait_for_time_wait(uint16_t port) {
  auto deadline = std::chrono::steady_clock::now() + kWait;
  while (std::chrono::steady_clock::now() < deadline) {
    if (has_time_wait_on_port(port)) return true;
    std::this_thread::yield();
  }
  return false;
}

}  // namespace

TEST(TcpListener, BindsPortZeroAndReportsTheRealPort) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  const Endpoint local = listener->local_endpoint();
  EXPECT_NE(local.port(), 0);
  EXPECT_EQ(local.host(), "127.0.0.1");
  EXPECT_EQ(local.to_string(), "127.0.0.1:" + std::to_string(local.port()));
  EXPECT_GE(listener->fd(), 0);
}

TEST(TcpListener, AcceptReturnsTheStreamAndThePeerAddress) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  auto client = TcpStream::connect(listener->local_endpoint(), kWait);
  ASSERT_TRUE(client) << client.error().message();
  // No timeout: the plain blocking accept, as in the tutorial.
  auto accepted = listener->accept();
  ASSERT_TRUE(accepted) << accepted.error().message();
  EXPECT_EQ(accepted->peer, client->local_endpoint());
  EXPECT_TRUE(accepted->stream.is_open());
  ASSERT_TRUE(client->send_all("ping"));
  char buf[4];
  ASSERT_TRUE(accepted->stream.set_recv_timeout(kWait));
  ASSERT_TRUE(accepted->stream.recv_exact(buf, sizeof buf));
  EXPECT_EQ(std::string(buf, 4), "ping");
}

TEST(TcpListener, AcceptsOverIpv6) {
  auto listener = TcpListener::bind(Endpoint::loopback_v6(0));
  if (!listener) GTEST_SKIP() << "no IPv6 loopback: " << listener.error().message();
  const Endpoint local = listener->local_endpoint();
  EXPECT_TRUE(local.is_v6());
  EXPECT_EQ(local.to_string(), "[::1]:" + std::to_string(local.port()));
  auto client = TcpStream::connect(local, kWait);
  ASSERT_TRUE(client) << client.error().message();
  auto accepted = listener->accept(kWait);
  ASSERT_TRUE(accepted) << accepted.error().message();
  EXPECT_TRUE(accepted->peer.is_v6());
  EXPECT_EQ(accepted->peer, client->local_endpoint());
}

TEST(TcpListener, DualStackWhenV6OnlyIsOff) {
  ListenOptions options;
  options.v6_only = false;
  auto any6 = Endpoint::parse("::", 0);
  ASSERT_TRUE(any6);
  auto listener = TcpListener::bind(*any6, options);
  if (!listener) GTEST_SKIP() << "no IPv6: " << listener.error().message();
  // An IPv4 client reaches the "::" listener as a v4-mapped address.
  auto client = TcpStream::connect(Endpoint::loopback_v4(listener->local_endpoint().port()), kWait);
  ASSERT_TRUE(client) << client.error().message();
  auto accepted = listener->accept(kWait);
  ASSERT_TRUE(accepted) << accepted.error().message();
  EXPECT_EQ(accepted->peer.host(), "::ffff:127.0.0.1");
}

TEST(TcpListener, AcceptTimesOut) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  auto start = std::chrono::steady_clock::now();
  auto accepted = listener->accept(100ms);
  ASSERT_FALSE(accepted);
  EXPECT_TRUE(accepted.error() == std::errc::timed_out) << accepted.error().message();
  EXPECT_EQ(accepted.error().message(),
            "accept on " + listener->local_endpoint().to_string() + ": Connection timed out");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 80ms);

  // A client that arrives later is still accepted.
  auto client = TcpStream::connect(listener->local_endpoint(), kWait);
  ASSERT_TRUE(client) << client.error().message();
  auto later = listener->accept(kWait);
  ASSERT_TRUE(later) << later.error().message();
}

TEST(TcpListener, NonblockingListenerAcceptsWithTimeout) {
  ListenOptions options;
  options.nonblocking = true;
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0), options);
  ASSERT_TRUE(listener) << listener.error().message();
  auto none = listener->accept(50ms);
  ASSERT_FALSE(none);
  EXPECT_TRUE(none.error() == std::errc::timed_out) << none.error().message();
  auto client = TcpStream::connect(listener->local_endpoint(), kWait);
  ASSERT_TRUE(client) << client.error().message();
  auto accepted = listener->accept(kWait);
  ASSERT_TRUE(accepted) << accepted.error().message();
}

TEST(TcpListener, BindToAPortInUseNamesTheAddress) {
  // SO_REUSEADDR on both does not let two live listeners share a port.
  auto first = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(first) << first.error().message();
  const Endpoint taken = first->local_endpoint();
  auto second = TcpListener::bind(taken);
  ASSERT_FALSE(second) << "two listeners on " << taken.to_string();
  EXPECT_TRUE(second.error() == std::errc::address_in_use) << second.error().message();
  EXPECT_NE(second.error().message().find("bind " + taken.to_string()), std::string::npos)
      << second.error().message();
  EXPECT_NE(second.error().message().find("Address already in use"), std::string::npos)
      << second.error().message();
}

TEST(TcpListener, ReusePortLetsTwoListenersShareAPort) {
  ListenOptions options;
  options.reuse_port = true;
  auto first = TcpListener::bind(Endpoint::loopback_v4(0), options);
  ASSERT_TRUE(first) << first.error().message();
  auto second = TcpListener::bind(first->local_endpoint(), options);
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(second->local_endpoint(), first->local_endpoint());
}

// The tutorial's section 7: "OSError: [Errno 98] Address already in use" when a
// server that closed its connections first is restarted at once. The side that
// closes first keeps the connection in TIME_WAIT for 2 MSL (60 s on Linux) and
// that socket still holds the port; SO_REUSEADDR lets a new listener bind anyway.
TEST(TcpListener, RestartWhileTimeWaitBindsWithReuseAddrOnly) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  const Endpoint address = listener->local_endpoint();
  {
    auto client = TcpStream::connect(address, kWait);
    ASSERT_TRUE(client) << client.error().message();
    auto accepted = listener->accept(kWait);
    ASSERT_TRUE(accepted) << accepted.error().message();
    // The server hangs up first...
    accepted->stream.close();
    ASSERT_TRUE(client->set_recv_timeout(kWait));
    char c;
    auto eof = client->recv(&c, 1);
    ASSERT_TRUE(eof) << eof.error().message();
    ASSERT_EQ(*eof, 0u);
    // ...then the client, whose FIN moves the server's socket to TIME_WAIT.
  }
  *listener = TcpListener();  // "shut the server down"
  ASSERT_TRUE(wait_for_time_wait(address.port()))
      << "no TIME_WAIT socket on " << address.to_string();

  ListenOptions no_reuse;
  no_reuse.reuse_addr = false;
  auto refused = TcpListener::bind(address, no_reuse);
  ASSERT_FALSE(refused) << "bind without SO_REUSEADDR succeeded despite TIME_WAIT";
  EXPECT_TRUE(refused.error() == std::errc::address_in_use) << refused.error().message();
  EXPECT_NE(refused.error().message().find(address.to_string()), std::string::npos)
      << refused.error().message();

  auto restarted = TcpListener::bind(address);  // reuse_addr is the default
  ASSERT_TRUE(restarted) << restarted.error().message();
  EXPECT_EQ(restarted->local_endpoint(), address);
  // And it serves.
  auto client = TcpStream::connect(address, kWait);
  ASSERT_TRUE(client) << client.error().message();
  ASSERT_TRUE(restarted->accept(kWait));
}

TEST(TcpListener, BindOfAnAddressNotOnThisHostFails) {
  // 192.0.2.0/24 is TEST-NET-1, never assigned to a local interface.
  auto foreign = Endpoint::parse("192.0.2.1", 0);
  ASSERT_TRUE(foreign);
  auto listener = TcpListener::bind(*foreign);
  ASSERT_FALSE(listener);
  EXPECT_TRUE(listener.error() == std::errc::address_not_available) << listener.error().message();
  EXPECT_NE(listener.error().message().find("bind 192.0.2.1:0"), std::string::npos)
      << listener.error().message();
}

TEST(TcpListener, ReleaseFdHandsOverOwnership) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  const int fd = listener->fd();
  tcpkit::UniqueFd owned = listener->release_fd();
  EXPECT_EQ(owned.get(), fd);
  EXPECT_EQ(listener->fd(), -1);
}

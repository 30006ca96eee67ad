// TcpConnection with reading paused, as a proxy pauses one side while the
// other is slow: the peer's data and FIN that arrive meanwhile must wait for
// resume_reading(), not be lost.
#include "tcpkit/tcp_connection.h"

#include <gtest/gtest.h>

#include <string>
#include <system_error>

#include "test_util.h"

using namespace std::chrono_literals;
using namespace tcpkit;
using namespace tcpkit::test;

namespace {

// Regression: after our FIN, the peer's data and FIN arrived while reading
// was paused. Linux reports EPOLLHUP once both FINs are processed, before
// the data is read, and the connection took it for a reset: it closed with
// connection_reset and dropped the data (seen through `tcpkit relay` with a
// slow client and an upstream that sends, then closes).
TEST(TcpConnectionPause, PeerFinWhilePausedAfterOurFinWaitsForResume) {
  ServerHarness h;
  Watched<TcpConnectionPtr> last;
  Watched<std::string> received;
  Watched<std::vector<std::error_code>> reasons;
  ServerOptions options;
  options.threads = 1;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&](const TcpConnectionPtr& conn) {
      if (conn->connected()) {
        last.set(conn);
        return;
      }
      reasons.update([&](auto& v) { v.push_back(conn->close_reason()); });
    });
    s.set_on_message([&](const TcpConnectionPtr&, Buffer& in) {
      std::string data = in.retrieve_all_as_string();
      received.update([&](std::string& r) { r += data; });
    });
    s.set_on_peer_closed([](const TcpConnectionPtr&) {});  // we shut down ourselves
  });
  auto client = connect_client(h.address());
  ASSERT_TRUE(client.send_all("hello"));
  ASSERT_TRUE(received.wait([](const std::string& r) { return r == "hello"; }));
  ASSERT_TRUE(last.wait([](const TcpConnectionPtr& c) { return c != nullptr; }));
  TcpConnectionPtr conn = last.get();

  conn->pause_reading();
  conn->shutdown();
  EXPECT_EQ(read_to_eof(client), "");  // our FIN has arrived
  ASSERT_TRUE(client.send_all("tail"));
  ASSERT_TRUE(client.shutdown_write());
  // Both FINs are out and "tail" is unread: a bounded wait for something
  // that must not happen (the early, false close).
  EXPECT_FALSE(reasons.wait([](const auto& v) { return !v.empty(); }, 300ms));

  conn->resume_reading();
  ASSERT_TRUE(reasons.wait([](const auto& v) { return !v.empty(); }));
  EXPECT_EQ(received.get(), "hellotail");
  EXPECT_EQ(reasons.get().at(0), make_error_code(Errc::peer_closed));
  last.set(nullptr);
  conn.reset();
  h.finish();
}

// Regression: a pause_reading() that came while the overflow policy had
// already paused reading was dropped, and the output draining below half
// the mark turned reading back on behind the user's back: a proxy pausing
// one side from on_high_water_mark got its peer's bytes anyway.
TEST(TcpConnectionPause, AUserPauseDuringAnOverflowPauseHoldsAfterTheOutputDrains) {
  constexpr size_t kMark = 64 * 1024;
  constexpr size_t kReply = size_t{32} << 20;  // more than loopback's socket buffers hold
  ServerHarness h;
  Watched<TcpConnectionPtr> last;
  Watched<std::string> received;
  ServerOptions options;
  options.threads = 1;
  options.connection.high_water_mark = kMark;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&](const TcpConnectionPtr& conn) {
      if (!conn->connected()) return;
      conn->send(std::string(kReply, 'z'));  // the client does not read yet: overflow
    });
    s.set_on_high_water_mark([&](const TcpConnectionPtr& conn, size_t) {
      conn->pause_reading();  // reading is already off; this pause must hold
      last.set(conn);
    });
    s.set_on_message([&](const TcpConnectionPtr&, Buffer& in) {
      std::string data = in.retrieve_all_as_string();
      received.update([&](std::string& r) { r += data; });
    });
  });
  auto client = connect_client(h.address());
  ASSERT_TRUE(last.wait([](const TcpConnectionPtr& c) { return c != nullptr; }));
  TcpConnectionPtr conn = last.get();
  ASSERT_TRUE(client.send_all("after the pause"));
  EXPECT_EQ(recv_n(client, kReply).size(), kReply);  // the output drains
  // A bounded wait for something that must not happen: the drain resuming.
  EXPECT_FALSE(received.wait([](const std::string& r) { return !r.empty(); }, 300ms));

  conn->resume_reading();
  ASSERT_TRUE(received.wait([](const std::string& r) { return r == "after the pause"; }));
  last.set(nullptr);
  conn.reset();
  client.close();
  h.finish();
}

}  // namespace

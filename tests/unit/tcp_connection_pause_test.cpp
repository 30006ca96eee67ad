// TcpConnection with reading paused, as a proxy pauses one side while the
// other is slow: the peer's data and FIN that arrive meanwhile must wait for
// resume_reading(), not be lost; what on_message left before the pause
// comes back when reading resumes.
#include "tcpkit/tcp_connection.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "tcpkit/tls_context.h"
#include "test_util.h"
#include "tls_test_util.h"

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

// A rate-limited server: on_message takes one line, pauses reading and
// resumes from a timer, leaving the rest of its buffer for later. `lines`
// has every line taken, in order; `lines_at_fin` how many there were when
// the peer's end came (-1: not yet).
struct OneLinePerResume {
  Watched<std::vector<std::string>> lines;
  Watched<int> lines_at_fin{-1};
  std::chrono::milliseconds resume_after{1};
  ServerHarness h;

  void start(ServerOptions options = {}) {
    options.threads = 1;
    h.start(options, [this](TcpServer& s) {
      s.set_on_message([this](const TcpConnectionPtr& conn, Buffer& in) {
        const char* eol = in.find_eol();
        if (eol == nullptr) return;
        std::string line = in.retrieve_as_string(static_cast<size_t>(eol - in.peek()) + 1);
        lines.update([&](auto& v) { v.push_back(std::move(line)); });
        conn->pause_reading();
        std::weak_ptr<TcpConnection> weak = conn;
        conn->loop()->run_after(resume_after, [weak] {
          if (auto c = weak.lock()) c->resume_reading();
        });
      });
      s.set_on_peer_closed([this](const TcpConnectionPtr& conn) {
        lines_at_fin.set(static_cast<int>(lines.get().size()));
        conn->shutdown();
      });
    });
  }
};

std::string ten_lines() {
  std::string text;
  for (int i = 0; i < 10; ++i) text += "line " + std::to_string(i) + "\n";
  return text;
}

std::vector<std::string> ten_lines_each() {
  std::vector<std::string> v;
  for (int i = 0; i < 10; ++i) v.push_back("line " + std::to_string(i) + "\n");
  return v;
}

// Regression: input that on_message left before pause_reading() waited for
// the peer's next bytes after resume_reading(), so a server that paused to
// limit a client's rate stalled for good once the client had sent it all.
TEST(TcpConnectionPause, WhatOnMessageLeftBeforeAPauseComesBackWhenReadingResumes) {
  OneLinePerResume server;
  server.start();
  auto client = connect_client(server.h.address());
  ASSERT_TRUE(client.send_all(ten_lines()));  // and nothing more
  EXPECT_TRUE(server.lines.wait([](const auto& v) { return v.size() >= 10; }))
      << server.lines.get().size() << " of 10 lines taken";
  EXPECT_EQ(server.lines.get(), ten_lines_each());
  client.close();
  server.h.finish();
}

TEST(TcpConnectionPause, EveryLineLeftBeforeAPauseComesBeforeThePeersFin) {
  OneLinePerResume server;
  server.start();
  auto client = connect_client(server.h.address());
  ASSERT_TRUE(client.send_all(ten_lines()));
  ASSERT_TRUE(client.shutdown_write());
  EXPECT_EQ(read_to_eof(client), "");  // the server answers the FIN with its own
  EXPECT_EQ(server.lines_at_fin.get(), 10);
  EXPECT_EQ(server.lines.get(), ten_lines_each());
  client.close();
  server.h.finish();
}

// Regression: a peer whose lines a rate limit held back was closed by the
// idle timeout while it waited, and the lines it had sent were lost: the
// timeout counted only reads, which the pause had stopped. Each pause here
// lasts longer than the idle timeout.
TEST(TcpConnectionPause, APeerWhoseInputWaitsForAResumeIsNotIdle) {
  ServerOptions options;
  options.connection.idle_timeout = 100ms;
  OneLinePerResume server;
  server.resume_after = 150ms;
  server.start(options);
  auto client = connect_client(server.h.address());
  ASSERT_TRUE(client.send_all(ten_lines()));
  EXPECT_TRUE(server.lines.wait([](const auto& v) { return v.size() >= 10; }))
      << server.lines.get().size() << " of 10 lines taken";
  EXPECT_EQ(server.lines.get(), ten_lines_each());
  // With nothing left to wait for, the connection is idle again.
  EXPECT_EQ(read_to_eof(client), "");
  client.close();
  server.h.finish();
}

// The same through TLS: the plaintext left before a pause comes back, and
// the client's close_notify, sent in the same write as the lines (so that
// the server decrypts both in one go), waits behind it.
TEST(TcpConnectionPause, UnderTlsThePlaintextLeftBeforeAPauseComesBeforeTheClose) {
  ServerOptions options;
  options.tls = std::make_shared<const TlsContext>(server_context());
  OneLinePerResume server;
  server.start(options);
  auto client_tls = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  auto client = connect_client(server.h.address());
  auto session = handshake_by_hand(client, client_tls);
  ASSERT_TRUE(session) << session.error().message();
  session->write_plaintext(ten_lines());
  session->shutdown();  // close_notify
  ASSERT_TRUE(client.send_all(session->take_ciphertext()));
  ASSERT_TRUE(client.shutdown_write());
  read_to_eof(client);  // the server's close_notify and FIN, unread
  EXPECT_EQ(server.lines_at_fin.get(), 10);
  EXPECT_EQ(server.lines.get(), ten_lines_each());
  client.close();
  server.h.finish();
}

}  // namespace

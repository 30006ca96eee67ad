// TcpClient's lifetime: one connection at a time, whatever the order of
// connect(), stop(), a lost connection's reconnect and the client's own
// destruction. The server and the client share one loop in the test's
// thread, as in the plainest client program.
#include "tcpkit/tcp_client.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tcpkit/event_loop.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tcp_server.h"
#include "test_util.h"

using namespace std::chrono_literals;
using namespace tcpkit;
using namespace tcpkit::test;

namespace {

// A server on the test's loop that counts what it sees.
class TcpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TcpServer>(&loop_);
    server_->set_on_connection([this](const TcpConnectionPtr& conn) {
      if (!conn->connected()) {
        ++server_closes_;
        if (on_server_close_) on_server_close_();
        return;
      }
      server_connections_.push_back(conn);
      if (on_accept_) on_accept_(conn);
    });
    auto listening = server_->listen(Endpoint::loopback_v4(0));
    ASSERT_TRUE(listening) << listening.error().message();
    auto started = server_->start();
    ASSERT_TRUE(started) << started.error().message();
    address_ = server_->listen_endpoints().at(0);
  }

  // Every test destroys its clients first; then the loop must hold nothing.
  void TearDown() override {
    server_connections_.clear();
    server_.reset();
    EXPECT_EQ(loop_.channel_count(), 0u);
  }

  // Runs the loop until a callback quits it; still running after kWait, the
  // test fails.
  void run() {
    TimerId guard = loop_.run_after(kWait, [this] {
      ADD_FAILURE() << "the loop was not quit within " << kWait.count() << " ms";
      loop_.quit();
    });
    loop_.run();
    loop_.cancel(guard);
  }

  void quit_after(std::chrono::milliseconds delay) {
    loop_.run_after(delay, [this] { loop_.quit(); });
  }

  EventLoop loop_;
  std::unique_ptr<TcpServer> server_;
  Endpoint address_;
  std::vector<TcpConnectionPtr> server_connections_;
  int server_closes_ = 0;
  std::function<void(const TcpConnectionPtr&)> on_accept_;
  std::function<void()> on_server_close_;
};

// Regression: with retry on, a lost connection schedules a reconnect; a
// stop(); connect() before it fired left it scheduled, and it then made a
// second connection beside the new one, whose replacement freed the live,
// still registered connection (an assertion in Debug; in Release a
// use-after-free on io_uring at its next data).
TEST_F(TcpClientTest, RestartBeforeAWaitingReconnectKeepsOneConnection) {
  on_accept_ = [this](const TcpConnectionPtr& conn) {
    if (server_connections_.size() == 1) conn->force_close();
  };
  ClientOptions options;
  options.retry = true;
  options.initial_backoff = 20ms;
  options.max_backoff = 20ms;
  TcpClient client(&loop_, address_, options);
  int ups = 0;
  int downs = 0;
  std::string received;
  client.set_on_connection([&](const TcpConnectionPtr& conn) {
    if (!conn->connected()) {
      // Queued: the reconnect is scheduled after this callback.
      if (++downs == 1)
        loop_.queue_in_loop([&] {
          client.stop();
          client.connect();
        });
      return;
    }
    // Well past the at most 20 ms the stale reconnect would wait.
    if (++ups == 2) quit_after(150ms);
  });
  client.set_on_message([&](const TcpConnectionPtr&, Buffer& in) {
    received.append(in.view());
    in.retrieve_all();
    loop_.quit();
  });
  client.connect();
  run();
  EXPECT_EQ(ups, 2);
  EXPECT_EQ(downs, 1);
  EXPECT_EQ(server_->stats().accepted, 2u);
  EXPECT_EQ(server_->open_connections(), 1u);

  // The connection the client holds is the one that works.
  auto conn = client.connection();
  ASSERT_TRUE(conn && conn->connected());
  server_connections_.back()->send("ping");
  run();
  EXPECT_EQ(received, "ping");
}

// A peer that accepts and closes at once (a port that is not the protocol's
// server) is retried with a back-off that grows, when a made connection
// does not end it: each of the first four reconnects waits at least half of
// 60, 120, 240 and 480 ms (the jitter's floor), 450 ms in all; had each
// connection reset the back-off, the four would take at most 4 x 90 ms.
TEST_F(TcpClientTest, WithoutResetOnConnectTheBackoffGrowsOverLostConnections) {
  on_accept_ = [](const TcpConnectionPtr& conn) { conn->force_close(); };
  ClientOptions options;
  options.retry = true;
  options.initial_backoff = 60ms;
  options.max_backoff = 10s;
  options.reset_backoff_on_connect = false;
  TcpClient client(&loop_, address_, options);
  std::vector<std::chrono::steady_clock::time_point> ups;
  client.set_on_connection([&](const TcpConnectionPtr& conn) {
    if (!conn->connected()) return;
    ups.push_back(std::chrono::steady_clock::now());
    if (ups.size() == 5) {
      client.stop();
      loop_.quit();
    }
  });
  client.connect();
  run();
  ASSERT_EQ(ups.size(), 5u);
  EXPECT_GE(ups.back() - ups.front(), 450ms);
}

// Regression: connect() while connected, or while connecting, started a
// second attempt, which dropped the first attempt or replaced (and freed)
// the live connection.
TEST_F(TcpClientTest, ConnectWhileConnectingOrConnectedKeepsTheOneConnection) {
  TcpClient client(&loop_, address_);
  int ups = 0;
  std::weak_ptr<TcpConnection> first;
  client.set_on_connection([&](const TcpConnectionPtr& conn) {
    if (!conn->connected()) return;
    if (++ups > 1) return;
    first = conn;
    client.connect();
    quit_after(100ms);
  });
  client.connect();
  client.connect();
  run();
  EXPECT_EQ(ups, 1);
  EXPECT_EQ(server_->stats().accepted, 1u);
  EXPECT_EQ(client.connection().get(), first.lock().get());
}

// Regression: a client destroyed after its loop's run() returned (the
// plainest program: get a reply, quit, return from main) queued its
// connection's close on a loop that never ran it; the loop's destructor
// then freed the still registered connection (an assertion in Debug).
TEST_F(TcpClientTest, DestroyedAfterItsLoopReturnedClosesItsConnectionAtOnce) {
  on_accept_ = [](const TcpConnectionPtr& conn) { conn->send("hi\n"); };
  auto client = std::make_unique<TcpClient>(&loop_, address_);
  client->set_on_message([&](const TcpConnectionPtr&, Buffer& in) {
    in.retrieve_all();
    loop_.quit();
  });
  client->connect();
  run();
  ASSERT_EQ(loop_.channel_count(), 3u);  // the listener and both ends
  client.reset();
  EXPECT_EQ(loop_.channel_count(), 2u);
  // The server sees the close as soon as the loop runs again.
  on_server_close_ = [this] { loop_.quit(); };
  run();
  EXPECT_EQ(server_closes_, 1);
}

// Regression: a client destroyed in its own on_message freed the table
// that held the running callback (stop() swapped the connection's table,
// and the client's own reference went with the client): the rest of the
// callback read freed memory (ASan: heap-use-after-free).
TEST_F(TcpClientTest, DestroyedInItsOwnOnMessage) {
  on_accept_ = [](const TcpConnectionPtr& conn) { conn->send("hello"); };
  on_server_close_ = [this] { loop_.quit(); };
  auto client = std::make_unique<TcpClient>(&loop_, address_);
  int client_closes = 0;
  std::string received;
  client->set_on_connection([&](const TcpConnectionPtr& conn) {
    if (!conn->connected()) ++client_closes;
  });
  client->set_on_message([&](const TcpConnectionPtr&, Buffer& in) {
    client.reset();
    // Reads what the callback captured, after the client is gone.
    received.append(in.view());
    in.retrieve_all();
  });
  client->connect();
  run();
  EXPECT_EQ(received, "hello");
  EXPECT_EQ(client_closes, 0);  // no callback after the destructor returned
  EXPECT_EQ(server_closes_, 1);
}

// Regression: an empty target list (a name that resolved to nothing) read
// targets_[0] out of bounds. connect() reports it instead, once, with no
// retry, whatever the options.
TEST_F(TcpClientTest, AnEmptyTargetListFailsThroughOnConnectError) {
  for (bool retry : {false, true}) {
    ClientOptions options;
    options.retry = retry;
    TcpClient client(&loop_, std::vector<Endpoint>{}, options);
    std::vector<Error> errors;
    std::vector<std::chrono::milliseconds> retries;
    client.set_on_connect_error([&](const Error& error, std::chrono::milliseconds retry_in) {
      errors.push_back(error);
      retries.push_back(retry_in);
    });
    client.connect();
    quit_after(0ms);  // a report queued by connect() would come first
    run();
    ASSERT_EQ(errors.size(), 1u) << "retry " << retry;
    EXPECT_EQ(errors[0].code(), make_error_code(Errc::name_not_found));
    EXPECT_NE(errors[0].message().find("no target address"), std::string::npos)
        << errors[0].message();
    EXPECT_LT(retries[0].count(), 0);
    EXPECT_EQ(client.connection(), nullptr);
    EXPECT_EQ(loop_.timer_count(), 0u);
  }
}

}  // namespace

// TcpServer over loopback: many concurrent clients on a loop pool, the
// connection limit, idle timeouts, graceful stop, and running out of
// descriptors (EMFILE).
#include "tcpkit/tcp_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tcpkit/tcp_listener.h"
#include "test_util.h"

using namespace std::chrono_literals;
using namespace tcpkit;
using namespace tcpkit::test;

namespace {

void expect_echo(TcpStream& s, const std::string& msg) {
  ASSERT_TRUE(s.send_all(msg));
  EXPECT_EQ(recv_n(s, msg.size()), msg);
}

TEST(TcpServer, EchoesOnTheBaseLoopWithoutThreads) {
  ServerHarness h;
  Tally tally;
  h.start({}, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    s.set_on_message(echo);
  });
  {
    auto c = connect_client(h.address());
    expect_echo(c, "hello, tcpkit");
    EXPECT_EQ(h.server().stats().accepted, 1u);
    EXPECT_EQ(h.server().stats().open, 1u);
  }
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  EXPECT_EQ(tally.reasons.get().at(0), make_error_code(Errc::peer_closed));
  h.finish();
}

TEST(TcpServer, OnAnyV6AddressServesIpv4ClientsTooWhenV6OnlyIsOff) {
  for (const bool v6_only : {true, false}) {
    auto any6 = Endpoint::parse("::", 0);
    ASSERT_TRUE(any6);
    if (!TcpListener::bind(*any6)) GTEST_SKIP() << "no IPv6 on this machine";
    ServerHarness h;
    ServerOptions options;
    options.v6_only = v6_only;
    h.start(
        options, [](TcpServer& s) { s.set_on_message(echo); }, *any6);
    {
      auto v4 = TcpStream::connect(Endpoint::loopback_v4(h.address().port()), kWait);
      EXPECT_EQ(static_cast<bool>(v4), !v6_only) << "v6_only " << v6_only;
      if (v4) expect_echo(*v4, "mapped");
    }
    h.finish();
  }
}

TEST(TcpServer, FiveHundredConcurrentClientsOnTwoLoopsGetByteExactEchoes) {
  raise_fd_limit();
  constexpr int kDrivers = 4;
  constexpr int kPerDriver = 125;
  ServerHarness h;
  Tally tally;
  std::mutex mutex;
  std::map<EventLoop*, int> per_loop;
  ServerOptions options;
  options.threads = 2;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&, cb = tally.callback()](const TcpConnectionPtr& conn) {
      if (conn->connected()) {
        EXPECT_TRUE(conn->loop()->is_in_loop_thread());
        std::lock_guard lock(mutex);
        ++per_loop[conn->loop()];
      }
      cb(conn);
    });
    s.set_on_message(echo);
  });

  std::atomic<int> echoed{0};
  std::vector<std::thread> drivers;
  for (int d = 0; d < kDrivers; ++d) {
    drivers.emplace_back([&, d] {
      // All of this driver's clients are connected at once, then each sends
      // its own message, then each reads its echo back.
      std::vector<TcpStream> clients;
      std::vector<std::string> messages;
      for (int i = 0; i < kPerDriver; ++i) {
        clients.push_back(connect_client(h.address()));
        int id = d * kPerDriver + i;
        std::string msg(100 + (id * 37) % 6000, '\0');
        for (size_t k = 0; k < msg.size(); ++k)
          msg[k] = static_cast<char>((id * 131 + k * 7) & 0xff);
        messages.push_back(std::move(msg));
      }
      for (int i = 0; i < kPerDriver; ++i) {
        auto r = clients[i].send_all(messages[i]);
        EXPECT_TRUE(r) << r.error().message();
      }
      for (int i = 0; i < kPerDriver; ++i) {
        if (recv_n(clients[i], messages[i].size()) == messages[i]) ++echoed;
      }
    });
  }
  for (auto& t : drivers) t.join();
  EXPECT_EQ(echoed, kDrivers * kPerDriver);
  EXPECT_EQ(h.server().stats().accepted, static_cast<uint64_t>(kDrivers * kPerDriver));
  ASSERT_TRUE(tally.down.wait([&](int n) { return n == kDrivers * kPerDriver; }));
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(per_loop.size(), 2u);  // round-robin used both loops
    for (auto& [loop, n] : per_loop) EXPECT_EQ(n, kDrivers * kPerDriver / 2);
  }
  for (auto& reason : tally.reasons.get()) EXPECT_EQ(reason, make_error_code(Errc::peer_closed));
  h.finish();
}

TEST(TcpServer, ReusePortPerLoopServesOnEveryLoop) {
  ServerHarness h;
  h.set_reuse_port_per_loop(true);
  Tally tally;
  ServerOptions options;
  options.threads = 2;
  options.reuse_port_per_loop = true;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    s.set_on_message(echo);
  });
  {
    std::vector<TcpStream> clients;
    for (int i = 0; i < 20; ++i) clients.push_back(connect_client(h.address()));
    for (int i = 0; i < 20; ++i) expect_echo(clients[i], "client " + std::to_string(i));
  }
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 20; }));
  h.finish();
}

// ServerOptions::busy_poll reaches every loop that serves connections: the
// base loop alone, or each I/O thread's.
TEST(TcpServer, BusyPollIsSetOnEveryLoopThatServes) {
  for (int threads : {0, 2}) {
    SCOPED_TRACE(threads);
    ServerHarness h;
    ServerOptions options;
    options.threads = threads;
    options.busy_poll = 200us;
    std::mutex mutex;
    std::set<EventLoop*> loops;
    std::vector<std::chrono::microseconds> spins;
    h.start(options, [&](TcpServer& s) {
      s.set_on_connection([&](const TcpConnectionPtr& c) {
        if (!c->connected()) return;
        std::lock_guard lock(mutex);
        loops.insert(c->loop());
        spins.push_back(c->loop()->busy_poll());
      });
      s.set_on_message(echo);
    });
    {
      std::vector<TcpStream> clients;
      for (int i = 0; i < 4; ++i) clients.push_back(connect_client(h.address()));
      for (int i = 0; i < 4; ++i) expect_echo(clients[i], "client " + std::to_string(i));
    }
    h.finish();
    std::lock_guard lock(mutex);
    EXPECT_EQ(loops.size(), threads == 0 ? 1u : 2u);
    EXPECT_EQ(spins, std::vector<std::chrono::microseconds>(4, 200us));
  }
}

TEST(TcpServer, ListenOnAPortInUseFailsWithAddressInUse) {
  auto holder = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(holder);
  LoopThread base;
  base.call([&] {
    TcpServer server(base.loop());
    auto r = server.listen(holder->local_endpoint());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), std::errc::address_in_use);
  });
}

TEST(TcpServer, ClientsOverMaxConnectionsAreAcceptedAndClosed) {
  ServerHarness h;
  Tally tally;
  ServerOptions options;
  options.threads = 1;
  options.max_connections = 2;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    s.set_on_message(echo);
  });
  auto c1 = connect_client(h.address());
  auto c2 = connect_client(h.address());
  expect_echo(c1, "one");
  expect_echo(c2, "two");

  auto extra = connect_client(h.address());
  char byte;
  auto n = extra.recv(&byte, 1);
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 0u);  // EOF, not a hang
  EXPECT_EQ(h.server().stats().refused_over_limit, 1u);
  EXPECT_EQ(h.server().stats().accepted, 3u);
  EXPECT_EQ(tally.up.get(), 2);
  expect_echo(c1, "still served");

  // Below the limit again, a new client is served.
  c1.close();
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  // The server forgets the connection just after on_connection reports it down.
  ASSERT_TRUE(eventually([&] { return h.server().open_connections() == 1; }));
  auto c3 = connect_client(h.address());
  expect_echo(c3, "three");
  EXPECT_EQ(h.server().stats().refused_over_limit, 1u);
  c2.close();
  c3.close();
  h.finish();
}

TEST(TcpServer, IdleConnectionIsClosedWithIdleTimeout) {
  ServerHarness h;
  Tally tally;
  ServerOptions options;
  options.threads = 1;
  options.connection.idle_timeout = 200ms;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    s.set_on_message(echo);
  });
  auto quiet = connect_client(h.address());
  // Activity after the connection came up makes the first idle check find
  // the connection busy and sleep for the rest of the period.
  auto active = connect_client(h.address());
  expect_echo(active, "ping");
  EXPECT_EQ(read_to_eof(quiet), "");
  EXPECT_EQ(read_to_eof(active), "");
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 2; }));
  for (auto& reason : tally.reasons.get()) EXPECT_EQ(reason, make_error_code(Errc::idle_timeout));
  h.finish();
}

// One I/O thread, the idle timeout, and room to queue output (64 MiB)
// before the high-water mark's policy.
ServerOptions idle_options(std::chrono::milliseconds idle_timeout) {
  ServerOptions options;
  options.threads = 1;
  options.connection.idle_timeout = idle_timeout;
  options.connection.high_water_mark = 64 * 1024 * 1024;
  return options;
}

// From on_connection: sends `payload` to `conn` every `interval`, `times`
// times, while it stays connected; `sent` counts the sends.
void send_every(const TcpConnectionPtr& conn, std::chrono::milliseconds interval, int times,
                std::string payload, std::atomic<int>& sent) {
  auto timer = std::make_shared<TimerId>(0);
  std::weak_ptr<TcpConnection> weak = conn;
  EventLoop* loop = conn->loop();
  *timer = loop->run_every(interval, [=, &sent] {
    auto c = weak.lock();
    if (!c || !c->connected() || sent.load() >= times) {
      loop->cancel(*timer);
      return;
    }
    c->send(payload);
    ++sent;
  });
}

// Regression: on epoll a reply that the kernel took at once did not count
// as activity (a send that had waited did, and so did every send on
// io_uring), so a client that only listens (a chat member who reads) was
// closed as idle while the server kept talking to it.
TEST(TcpServer, SendsThatReachThePeerKeepAConnectionFromBeingIdle) {
  constexpr int kTicks = 12;  // 40 ms apart: three idle timeouts in all
  ServerHarness h;
  Tally tally;
  const ServerOptions options = idle_options(150ms);
  std::atomic<int> ticks{0};
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&, cb = tally.callback()](const TcpConnectionPtr& conn) {
      cb(conn);
      if (conn->connected()) send_every(conn, 40ms, kTicks, "tick\n", ticks);
    });
  });
  auto listener = connect_client(h.address());
  std::string expected;
  for (int i = 0; i < kTicks; ++i) expected += "tick\n";
  EXPECT_EQ(recv_n(listener, expected.size()), expected);
  // Once the server falls silent too, the connection is idle.
  EXPECT_EQ(read_to_eof(listener), "");
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  EXPECT_EQ(tally.reasons.get().at(0), make_error_code(Errc::idle_timeout));
  h.finish();
}

// Regression: sends counted once the kernel took them, so a client that
// reads steadily but more slowly than the send buffer's wake-up needs (a
// third of a buffer of megabytes must drain) looked idle, and the reply was
// cut off with a clean FIN. What the peer takes (acknowledges) counts.
TEST(TcpServer, APeerThatReadsSlowlyButSteadilyIsNotIdle) {
  const std::string reply(6 * 1024 * 1024, 'r');
  ServerHarness h;
  Tally tally;
  const ServerOptions options = idle_options(150ms);
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&, cb = tally.callback()](const TcpConnectionPtr& conn) {
      cb(conn);
      if (conn->connected()) conn->send(reply);
    });
  });
  auto reader = connect_client(h.address());
  // 64 KiB every 20 ms: about 3 MB/s, so 6 MiB take two seconds.
  std::string got;
  char chunk[64 * 1024];
  while (got.size() < reply.size()) {
    auto n = reader.recv(chunk, sizeof chunk);
    ASSERT_TRUE(n && *n > 0) << "closed after " << got.size() << " bytes";
    got.append(chunk, *n);
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(got, reply);
  EXPECT_EQ(read_to_eof(reader), "");  // then nothing moves: idle
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  EXPECT_EQ(tally.reasons.get().at(0), make_error_code(Errc::idle_timeout));
  h.finish();
}

// The other side of the rule: a client that stopped reading is idle once
// the kernel takes no more for it, however often the server adds output.
TEST(TcpServer, APeerThatStoppedReadingIsIdleOnceTheKernelTakesNoMore) {
  constexpr int kMostChunks = 400;  // 128 KiB every 10 ms: 50 MiB in 4 s
  ServerHarness h;
  Tally tally;
  const ServerOptions options = idle_options(150ms);
  std::atomic<int> chunks{0};
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&, cb = tally.callback()](const TcpConnectionPtr& conn) {
      cb(conn);
      if (conn->connected())
        send_every(conn, 10ms, kMostChunks, std::string(128 * 1024, 'x'), chunks);
    });
  });
  auto deaf = connect_client(h.address());  // never reads
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  EXPECT_EQ(tally.reasons.get().at(0), make_error_code(Errc::idle_timeout));
  // Closed once the socket buffers were full, while the server still added.
  EXPECT_LT(chunks.load(), kMostChunks);
  h.finish();
}

// Regression: input that waited on the user's pause counted only once read
// into the connection; still in the kernel (the pause came before any
// read), the peer looked idle and was closed with it unread.
TEST(TcpServer, InputThatWaitsInTheKernelOnAPauseIsNotIdle) {
  ServerHarness h;
  Tally tally;
  const ServerOptions options = idle_options(100ms);
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&, cb = tally.callback()](const TcpConnectionPtr& conn) {
      cb(conn);
      if (!conn->connected()) return;
      conn->pause_reading();
      conn->loop()->run_after(400ms, [conn] { conn->resume_reading(); });  // four timeouts
    });
    s.set_on_message(echo);
  });
  auto client = connect_client(h.address());
  ASSERT_TRUE(client.send_all("waits in the kernel"));
  EXPECT_EQ(recv_n(client, 19), "waits in the kernel");
  EXPECT_EQ(read_to_eof(client), "");  // then idle
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  EXPECT_EQ(tally.reasons.get().at(0), make_error_code(Errc::idle_timeout));
  h.finish();
}

// keep_from_idling(): bytes the user holds for the connection (a relay's
// delay) keep it open past the idle timeout; once let go, it idles out.
TEST(TcpServer, AConnectionKeptFromIdlingOutlastsTheTimeoutThenIdlesOut) {
  ServerHarness h;
  Tally tally;
  ServerOptions options;
  options.threads = 1;
  options.connection.idle_timeout = 100ms;
  Watched<bool> open_when_let_go{false};
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&, cb = tally.callback()](const TcpConnectionPtr& conn) {
      cb(conn);
      if (!conn->connected()) return;
      conn->keep_from_idling(true);
      conn->loop()->run_after(400ms, [&, conn] {  // four timeouts
        open_when_let_go.set(conn->connected());
        conn->keep_from_idling(false);
      });
    });
  });
  auto quiet = connect_client(h.address());
  EXPECT_EQ(read_to_eof(quiet), "");
  EXPECT_TRUE(open_when_let_go.get());
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  EXPECT_EQ(tally.reasons.get().at(0), make_error_code(Errc::idle_timeout));
  h.finish();
}

// Regression: milliseconds::max() ("never") became a negative time in the
// loop clock's nanoseconds, so every connection was closed at once as idle.
TEST(TcpServer, AnIdleTimeoutTooLongForTheClockNeverCloses) {
  ServerHarness h;
  Tally tally;
  ServerOptions options;
  options.threads = 1;
  options.connection.idle_timeout = std::chrono::milliseconds::max();
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    s.set_on_message(echo);
  });
  auto client = connect_client(h.address());
  expect_echo(client, "ping");
  std::this_thread::sleep_for(50ms);
  expect_echo(client, "still here");
  client.close();
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  EXPECT_NE(tally.reasons.get().at(0), make_error_code(Errc::idle_timeout));
  h.finish();
}

TEST(TcpServer, StopDeliversQueuedRepliesThenClosesAndCallsOnStopped) {
  ServerHarness h;
  Tally tally;
  const std::string reply(3 * 1024 * 1024, 'r');
  Watched<bool> queued{false};
  ServerOptions options;
  options.threads = 2;
  options.connection.high_water_mark = 64 * 1024 * 1024;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    s.set_on_message([&](const TcpConnectionPtr& conn, Buffer& in) {
      in.retrieve_all();
      conn->send(reply);
      queued.set(true);
    });
  });
  auto c = connect_client(h.address());
  ASSERT_TRUE(c.send_all("go"));
  ASSERT_TRUE(queued.wait([](bool q) { return q; }));

  Watched<bool> stopped{false};
  h.base().call([&] { h.server().stop(5s, [&] { stopped.set(true); }); });
  // Nothing queued is lost: the whole reply, then our FIN.
  std::string got = read_to_eof(c);
  EXPECT_EQ(got.size(), reply.size());
  EXPECT_TRUE(got == reply);
  EXPECT_FALSE(stopped.get());  // the client has not closed yet
  c.close();
  ASSERT_TRUE(stopped.wait([](bool s) { return s; }));
  EXPECT_EQ(tally.reasons.get().at(0), make_error_code(Errc::peer_closed));

  // The listener is gone: new clients are refused.
  auto late = TcpStream::connect(h.address(), kWait);
  EXPECT_FALSE(late);
  h.finish(/*listening=*/false);
}

// A server's goodbye (chat: "* server shutting down") goes out before the
// FIN that stop() sends, on every loop.
TEST(TcpServer, StopRunsOnDrainingForEachConnectionBeforeItsFin) {
  ServerHarness h;
  Tally tally;
  ServerOptions options;
  options.threads = 2;
  std::atomic<int> drained{0};
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    s.set_on_message([](const TcpConnectionPtr& conn, Buffer& in) { conn->send(in); });
    s.set_on_draining([&](const TcpConnectionPtr& conn) {
      EXPECT_TRUE(conn->loop()->is_in_loop_thread());
      EXPECT_TRUE(conn->connected());
      conn->send(std::string_view("bye\n"));
      drained.fetch_add(1);
    });
  });
  auto c1 = connect_client(h.address());
  auto c2 = connect_client(h.address());
  expect_echo(c1, "x");
  expect_echo(c2, "y");
  Watched<bool> stopped{false};
  h.base().call([&] { h.server().stop(5s, [&] { stopped.set(true); }); });
  EXPECT_EQ(read_to_eof(c1), "bye\n");
  EXPECT_EQ(read_to_eof(c2), "bye\n");
  EXPECT_EQ(drained.load(), 2);
  c1.close();
  c2.close();
  ASSERT_TRUE(stopped.wait([](bool s) { return s; }));
  h.finish(/*listening=*/false);
}

TEST(TcpServer, StopForceClosesConnectionsStillOpenAfterTheDeadline) {
  ServerHarness h;
  Tally tally;
  start_echo(h, tally);
  auto c = connect_client(h.address());
  expect_echo(c, "x");
  Watched<bool> stopped{false};
  h.base().call([&] { h.server().stop(100ms, [&] { stopped.set(true); }); });
  char byte;
  auto n = c.recv(&byte, 1);  // the server's FIN; we never send ours
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0u);
  ASSERT_TRUE(stopped.wait([](bool s) { return s; }));
  EXPECT_EQ(tally.reasons.get().at(0), std::errc::timed_out);
  h.finish(/*listening=*/false);
}

TEST(TcpServer, StopWithoutConnectionsCallsOnStoppedAtOnce) {
  ServerHarness h;
  ServerOptions options;
  options.threads = 2;
  h.start(options);
  Watched<bool> stopped{false};
  h.base().call([&] { h.server().stop(10s, [&] { stopped.set(true); }); });
  EXPECT_TRUE(stopped.wait([](bool s) { return s; }));
  h.finish(/*listening=*/false);  // also cancels the 10 s drain timer
}

// Regression: stop() queues work for the base loop that used to outlive a
// server destroyed in the same turn (use after free under ASan).
TEST(TcpServer, DestroyingTheServerRightAfterStopIsSafe) {
  LoopThread base;
  ServerOptions options;
  options.threads = 1;
  base.call([&] {
    auto server = std::make_unique<TcpServer>(base.loop(), options);
    ASSERT_TRUE(server->listen(Endpoint::loopback_v4(0)));
    ASSERT_TRUE(server->start());
    server->stop(1s, [] { ADD_FAILURE() << "on_stopped after the server is gone"; });
    server.reset();
  });
  base.call([&] {  // the functors stop() queued have run by now
    EXPECT_EQ(base.loop()->channel_count(), 0u);
    EXPECT_EQ(base.loop()->timer_count(), 0u);
  });
}

// Regression: stop() from a callback destroyed the listener's channel while
// its event still waited further down the same epoll batch.
TEST(TcpServer, StopFromACallbackWhileAClientConnectsInTheSameBatch) {
  ServerHarness h;
  Tally tally;
  Watched<bool> stopped{false};
  h.start({}, [&](TcpServer& s) {  // threads = 0: one loop sees both events
    s.set_on_connection(tally.callback());
    s.set_on_message([&](const TcpConnectionPtr& conn, Buffer& in) {
      if (in.view() != "stop") return echo(conn, in);
      in.retrieve_all();
      h.server().stop(1s, [&] { stopped.set(true); });
    });
  });
  auto c1 = connect_client(h.address());
  expect_echo(c1, "hi");

  // Hold the loop so that the message and the new client are reported by
  // the same epoll_wait, the message first.
  std::promise<void> holding, release;
  h.base().loop()->queue_in_loop([&] {
    holding.set_value();
    release.get_future().wait();
  });
  holding.get_future().wait();
  ASSERT_TRUE(c1.send_all("stop"));
  auto c2 = TcpStream::connect(h.address(), kWait);  // completes in the backlog
  ASSERT_TRUE(c2);
  release.set_value();

  EXPECT_EQ(read_to_eof(c1), "");  // the server's FIN after stop()
  c1.close();
  ASSERT_TRUE(stopped.wait([](bool s) { return s; }));
  h.finish(/*listening=*/false);
}

// Regression: without I/O threads on_connection runs inside the listener's
// accept loop, and stop() from there freed the acceptor that loop went on
// reading (use after free under ASan), in both listener modes.
TEST(TcpServer, StopFromOnConnectionWithoutIoThreads) {
  for (bool per_loop : {false, true}) {
    SCOPED_TRACE(per_loop ? "reuse_port_per_loop" : "one listener");
    ServerHarness h;
    h.set_reuse_port_per_loop(per_loop);
    ServerOptions options;  // threads = 0
    options.reuse_port_per_loop = per_loop;
    Tally tally;
    Watched<bool> stopped{false};
    h.start(options, [&](TcpServer& s) {
      s.set_on_connection([&, cb = tally.callback()](const TcpConnectionPtr& conn) {
        cb(conn);
        if (conn->connected()) h.server().stop(1s, [&] { stopped.set(true); });
      });
    });
    auto c = connect_client(h.address());
    EXPECT_EQ(read_to_eof(c), "");  // the server's FIN after stop()
    c.close();
    ASSERT_TRUE(stopped.wait([](bool s) { return s; }));
    EXPECT_EQ(tally.up.get(), 1);
    h.finish(/*listening=*/false);
  }
}

// Regression: the same for a server destroyed from its own on_connection.
TEST(TcpServer, DestroyFromOnConnectionWithoutIoThreads) {
  LoopThread base;
  std::unique_ptr<TcpServer> server;
  Watched<int> downs{0};
  Endpoint address;
  base.call([&] {
    server = std::make_unique<TcpServer>(base.loop(), ServerOptions{});
    server->set_on_connection([&](const TcpConnectionPtr& conn) {
      if (conn->connected()) {
        server.reset();  // reports this connection down, from inside the call
        return;
      }
      downs.update([](int& n) { ++n; });
    });
    ASSERT_TRUE(server->listen(Endpoint::loopback_v4(0)));
    ASSERT_TRUE(server->start());
    address = server->listen_endpoints().at(0);
  });
  auto c = connect_client(address);
  EXPECT_EQ(read_to_eof(c), "");
  ASSERT_TRUE(downs.wait([](int n) { return n == 1; }));
  base.call([&] {
    EXPECT_EQ(server, nullptr);
    EXPECT_EQ(base.loop()->channel_count(), 0u);
    EXPECT_EQ(base.loop()->timer_count(), 0u);
  });
}

// Descriptors of this process, the highest open one included.
int highest_open_fd() {
  int highest = -1;
  for (int fd = 0; fd < 4096; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1) highest = fd;
  }
  return highest;
}

TEST(TcpServer, RunningOutOfDescriptorsRefusesWithoutSpinningAndRecovers) {
  TCPKIT_SKIP_WHERE_DESCRIPTORS_CANNOT_RUN_OUT();
  ServerHarness h;
  Tally tally;
  start_echo(h, tally);

  // Leave exactly five free descriptors: two clients served (two ends each),
  // then one more client socket, and the server's accept finds none.
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(highest_open_fd() + 1 + 16);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> fillers;
  for (;;) {
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    fillers.push_back(fd);
  }
  ASSERT_GE(fillers.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    ::close(fillers.back());
    fillers.pop_back();
  }
  auto restore = [&] {
    for (int fd : fillers) ::close(fd);
    fillers.clear();
    (void)::setrlimit(RLIMIT_NOFILE, &saved);
  };

  auto c1 = connect_client(h.address());
  expect_echo(c1, "one");
  auto c2 = connect_client(h.address());
  expect_echo(c2, "two");
  auto c3 = connect_client(h.address());
  ASSERT_TRUE(c3.is_open());
  char byte;
  auto n = c3.recv(&byte, 1);  // refused through the spare descriptor: EOF
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(h.server().stats().refused_exhausted, 1u);

  // Free descriptors on both sides; the server accepts again after its
  // back-off and serves a new client.
  c3.close();
  c1.close();
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  auto c4 = connect_client(h.address());
  expect_echo(c4, "four");
  // One refusal per refused client: the acceptor did not spin on EMFILE.
  EXPECT_EQ(h.server().stats().refused_exhausted, 1u);
  EXPECT_EQ(tally.up.get(), 3);
  restore();

  c2.close();
  c4.close();
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 3; }));
  h.finish();
}

// With reuse_port_per_loop, start() binds one more listener per I/O loop.
// Four free descriptors are the two I/O loops (epoll + eventfd each); the
// second loop's listener then gets no socket, and start() says so instead
// of serving on fewer loops than asked. The server is destroyed cleanly.
TEST(TcpServerDeathTest, StartReportsAPerLoopListenerThatCannotBeBound) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        EventLoop base;
        ServerOptions options;
        options.threads = 2;
        options.reuse_port_per_loop = true;
        auto server = std::make_unique<TcpServer>(&base, options);
        if (!server->listen(Endpoint::loopback_v4(0))) std::_Exit(1);
        auto held = exhaust_descriptors(4);
        auto started = server->start();
        if (started) std::_Exit(1);
        server.reset();
        std::fprintf(stderr, "[%s]\n", started.error().message().c_str());
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "\\[socket for 127\\.0\\.0\\.1:[0-9]+: Too many open files\\]");
}

// A connection's local address is the one the client reached: the
// listener's own when it is specific, the kernel's answer on a wildcard.
TEST(TcpServer, LocalEndpointIsTheAddressTheClientReached) {
  for (const Endpoint& listen_on : {Endpoint::any_v4(0), Endpoint::loopback_v4(0)}) {
    Watched<std::vector<Endpoint>> locals;
    ServerHarness h;
    h.start(
        {},
        [&](TcpServer& s) {
          s.set_on_connection([&](const TcpConnectionPtr& c) {
            if (c->connected()) locals.update([&](auto& v) { v.push_back(c->local_endpoint()); });
          });
        },
        listen_on);
    const Endpoint target = Endpoint::loopback_v4(h.address().port());
    {
      auto client = TcpStream::connect(target, kWait);
      ASSERT_TRUE(client) << client.error().message();
      ASSERT_TRUE(locals.wait([](const auto& v) { return v.size() == 1; }));
      EXPECT_EQ(locals.get().at(0), target) << "listening on " << listen_on.to_string();
      EXPECT_EQ(locals.get().at(0), client->peer_endpoint());
    }
    h.finish();
  }
}

// TCP_NODELAY and SO_KEEPALIVE are set on the listening sockets and come to
// each accepted connection from there, on every loop's listener too.
TEST(TcpServer, AcceptedConnectionsHaveNoDelayAndKeepaliveAsConfigured) {
  const auto option = [](int fd, int level, int name) {
    int value = -1;
    socklen_t len = sizeof value;
    EXPECT_EQ(::getsockopt(fd, level, name, &value, &len), 0);
    return value != 0;
  };
  for (const bool on : {true, false}) {
    for (const bool per_loop : {false, true}) {
      ServerHarness h;
      h.set_reuse_port_per_loop(per_loop);
      ServerOptions options;
      options.threads = 2;
      options.reuse_port_per_loop = per_loop;
      options.tcp_nodelay = on;
      options.keepalive = on;
      Watched<std::vector<std::pair<bool, bool>>> seen;
      h.start(options, [&](TcpServer& s) {
        s.set_on_connection([&](const TcpConnectionPtr& c) {
          if (!c->connected()) return;
          const bool nodelay = option(c->fd(), IPPROTO_TCP, TCP_NODELAY);
          const bool keepalive = option(c->fd(), SOL_SOCKET, SO_KEEPALIVE);
          seen.update([&](auto& v) { v.emplace_back(nodelay, keepalive); });
        });
      });
      {
        std::vector<TcpStream> clients;
        for (int i = 0; i < 8; ++i) clients.push_back(connect_client(h.address()));
        ASSERT_TRUE(seen.wait([](const auto& v) { return v.size() == 8; }));
      }
      for (auto [nodelay, keepalive] : seen.get()) {
        EXPECT_EQ(nodelay, on) << "per_loop " << per_loop;
        EXPECT_EQ(keepalive, on) << "per_loop " << per_loop;
      }
      h.finish();
    }
  }
}

}  // namespace

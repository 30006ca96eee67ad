// TLS inside the connection, on the reactor and on a blocking stream: the
// same calls carry plaintext; backpressure, timeouts and close reasons see
// the layer (bytes held for a handshake count toward the high-water mark).
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <functional>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tcpkit/tcp_client.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tcp_listener.h"
#include "tcpkit/tcp_stream.h"
#include "tcpkit/tls_context.h"
#include "tcpkit/tls_session.h"
#include "test_util.h"
#include "tls_test_util.h"

using namespace std::chrono_literals;
using namespace tcpkit;
using namespace tcpkit::test;

namespace {

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

std::shared_ptr<const TlsContext> shared(TlsContext ctx) {
  return std::make_shared<const TlsContext>(std::move(ctx));
}

// How a connection ended, as its close callback saw it.
struct Ending {
  CloseReason kind = CloseReason::none;
  std::string reason;
  bool tls_peer_closed = false;
  bool tls_truncated = false;
};

Ending ending_of(const TcpConnectionPtr& conn) {
  return {conn->close_kind(), conn->close_reason().message(),
          conn->tls() != nullptr && conn->tls()->peer_closed(), conn->tls_truncated()};
}

// A TLS echo server: the library starts TLS on every connection.
struct EchoServer {
  Watched<int> messages{0};
  Watched<int> handshakes{0};
  Watched<int> peer_closed{0};
  Watched<std::vector<Ending>> endings;
  Watched<std::string> received;
  ServerHarness h;

  void start(ServerOptions options, std::shared_ptr<const TlsContext> tls) {
    options.tls = std::move(tls);
    h.start(options, [this](TcpServer& s) {
      s.set_on_connection([this](const TcpConnectionPtr& conn) {
        if (!conn->connected()) endings.update([&](auto& v) { v.push_back(ending_of(conn)); });
      });
      s.set_on_handshake(
          [this](const TcpConnectionPtr&) { handshakes.update([](int& n) { ++n; }); });
      s.set_on_message([this](const TcpConnectionPtr& conn, Buffer& in) {
        messages.update([](int& n) { ++n; });
        received.update([&](std::string& r) { r.append(in.view()); });
        conn->send(in);
      });
      s.set_on_peer_closed([this](const TcpConnectionPtr& conn) {
        peer_closed.update([](int& n) { ++n; });
        conn->shutdown();
      });
    });
  }
};

// A TcpClient on its own loop.
struct ClientSide {
  LoopThread loop;
  std::unique_ptr<TcpClient> client;
  Watched<TcpConnectionPtr> conn;
  Watched<bool> ready{false};
  Watched<std::string> received;
  Watched<std::vector<Ending>> endings;
  PeerClosedCallback on_peer_closed;  ///< if set before start()

  void start(const Endpoint& server, ClientOptions options, std::string first_words = "") {
    client = std::make_unique<TcpClient>(loop.loop(), server, std::move(options));
    if (on_peer_closed) client->set_on_peer_closed(on_peer_closed);
    client->set_on_connection([this, first_words](const TcpConnectionPtr& c) {
      if (!c->connected()) {
        endings.update([&](auto& v) { v.push_back(ending_of(c)); });
        return;
      }
      if (!first_words.empty()) c->send(first_words);  // held until the handshake is done
      conn.set(c);
    });
    client->set_on_handshake([this](const TcpConnectionPtr&) { ready.set(true); });
    client->set_on_message([this](const TcpConnectionPtr&, Buffer& in) {
      received.update([&](std::string& s) { s.append(in.view()); });
      in.retrieve_all();
    });
    client->connect();
  }

  ~ClientSide() {
    conn.set(nullptr);
    client.reset();
  }
};

ClientOptions tls_client(std::shared_ptr<const TlsContext> tls) {
  ClientOptions o;
  o.tls = std::move(tls);
  return o;
}

TEST(TlsTransport, ClientAndServerExchangeMegabytesByteExactThroughTheOneConnectionApi) {
  EchoServer server;
  server.start({}, shared(server_context()));
  ClientSide client;
  client.start(
      server.h.address(),
      tls_client(shared(client_context({TestCerts::get().cert("server"), true, "127.0.0.1"}))),
      "hello over TLS");
  ASSERT_TRUE(client.ready.wait([](bool r) { return r; }));
  ASSERT_TRUE(client.received.wait([](const std::string& s) { return s == "hello over TLS"; }))
      << client.received.get();
  EXPECT_TRUE(client.loop.call([&] { return client.conn.get()->tls() != nullptr; }));
  EXPECT_EQ(server.handshakes.get(), 1);

  // From the test thread: send() forwards to the client's loop, in order.
  const std::string payload = random_bytes(2 * 1024 * 1024 + 11, 7);
  auto conn = client.conn.get();
  for (size_t offset = 0; offset < payload.size(); offset += 100'000) {
    conn->send(std::string_view(payload).substr(offset, 100'000));
  }
  const size_t expected = 14 + payload.size();
  ASSERT_TRUE(client.received.wait([&](const std::string& s) { return s.size() >= expected; }, 30s))
      << client.received.get().size() << " of " << expected << " bytes came back";
  EXPECT_TRUE(client.received.get() == "hello over TLS" + payload) << "the echo differs";
  // The stats count what went over the wire: more than the plaintext.
  EXPECT_GT(conn->bytes_sent(), payload.size());

  // close_notify and FIN from the client; the server answers with its own.
  conn->shutdown();
  EXPECT_TRUE(server.peer_closed.wait([](int n) { return n == 1; }));
  ASSERT_TRUE(client.endings.wait([](const auto& v) { return v.size() == 1; }));
  EXPECT_EQ(client.endings.get()[0].kind, CloseReason::peer_closed)
      << client.endings.get()[0].reason;
  EXPECT_TRUE(client.endings.get()[0].tls_peer_closed)
      << "the server's close_notify did not arrive";
  ASSERT_TRUE(server.endings.wait([](const auto& v) { return v.size() == 1; }));
  EXPECT_EQ(server.endings.get()[0].kind, CloseReason::peer_closed)
      << server.endings.get()[0].reason;
  conn.reset();
  server.h.finish();
}

// A client that connects and hangs up before any handshake (a port scan,
// a health check that only connects) is closed, not held open: its
// handshake can no longer finish, whether or not the server listens for the
// peer's FIN (EchoServer shuts down from on_peer_closed).
TEST(TlsTransport, APeerThatHangsUpBeforeTheHandshakeIsClosed) {
  EchoServer listening;
  listening.start({}, shared(server_context()));
  ServerHarness deaf;
  Watched<std::vector<Ending>> deaf_endings;
  ServerOptions options;
  options.tls = shared(server_context());
  deaf.start(options, [&](TcpServer& s) {
    s.set_on_connection([&](const TcpConnectionPtr& c) {
      if (!c->connected()) deaf_endings.update([&](auto& v) { v.push_back(ending_of(c)); });
    });
  });
  // A half-close: the client waits for the server's end.
  auto half = connect_client(listening.h.address());
  ASSERT_TRUE(half.shutdown_write());
  EXPECT_EQ(read_to_eof(half), "");
  ASSERT_TRUE(listening.endings.wait([](const auto& v) { return v.size() == 1; }));
  EXPECT_EQ(listening.endings.get()[0].kind, CloseReason::peer_closed)
      << listening.endings.get()[0].reason;
  EXPECT_FALSE(listening.endings.get()[0].tls_truncated) << "nothing was sent to cut short";
  // A whole close.
  auto whole = connect_client(deaf.address());
  whole.close();
  ASSERT_TRUE(deaf_endings.wait([](const auto& v) { return v.size() == 1; }));
  EXPECT_EQ(deaf_endings.get()[0].kind, CloseReason::peer_closed) << deaf_endings.get()[0].reason;
  EXPECT_EQ(listening.handshakes.get(), 0);
  listening.h.finish();
  deaf.finish();
}

TEST(TlsTransport, RejectedCertificateIsATypedCloseReasonAndNothingIsSent) {
  EchoServer server;
  server.start({}, shared(server_context()));
  // The system's CAs do not know the test server's self-signed certificate.
  ClientSide client;
  client.start(server.h.address(), tls_client(shared(client_context({"", true, "localhost"}))),
               "a secret");
  ASSERT_TRUE(client.endings.wait([](const auto& v) { return !v.empty(); }));
  EXPECT_EQ(client.endings.get()[0].kind, CloseReason::tls_handshake_failed);
  EXPECT_EQ(client.endings.get()[0].reason, "certificate verify failed: self-signed certificate");
  // The alert tells the server why; its connection closes with that reason.
  ASSERT_TRUE(server.endings.wait([](const auto& v) { return !v.empty(); }));
  EXPECT_EQ(server.endings.get()[0].kind, CloseReason::tls_handshake_failed);
  EXPECT_NE(server.endings.get()[0].reason.find("alert"), std::string::npos)
      << server.endings.get()[0].reason;
  EXPECT_FALSE(client.ready.get());
  EXPECT_EQ(server.messages.get(), 0);
  EXPECT_EQ(server.handshakes.get(), 0);
  server.h.finish();
}

// start_tls() from on_message: a line in the clear comes first (as a PROXY
// header does), and what follows it in the same read is the TLS hello.
TEST(TlsTransport, StartTlsAfterAClearPreambleTakesTheRestOfTheRead) {
  auto server_ctx = shared(server_context());
  Watched<std::string> preamble;
  Watched<std::string> plaintext;
  ServerHarness h;
  h.start({}, [&](TcpServer& s) {
    s.set_on_message([&](const TcpConnectionPtr& conn, Buffer& in) {
      if (conn->tls() == nullptr) {
        const char* eol = in.find_eol();
        if (eol == nullptr) return;  // the line is not whole yet
        preamble.set(in.retrieve_as_string(static_cast<size_t>(eol - in.peek()) + 1));
        ASSERT_TRUE(conn->start_tls(*server_ctx));
        return;  // the rest of `in` is the layer's
      }
      plaintext.update([&](std::string& p) { p.append(in.view()); });
      conn->send(in);
    });
  });

  auto client_ctx = shared(client_context({TestCerts::get().cert("server"), true, "127.0.0.1"}));
  ClientSide client;
  client.client = std::make_unique<TcpClient>(client.loop.loop(), h.address());
  client.client->set_on_connection([&](const TcpConnectionPtr& conn) {
    if (!conn->connected()) return;
    // Both go out in one write: the preamble, then the hello.
    conn->send("CLEAR PREAMBLE\n");
    ASSERT_TRUE(conn->start_tls(*client_ctx));
    conn->send("secret words");
    client.conn.set(conn);
  });
  client.client->set_on_message([&](const TcpConnectionPtr&, Buffer& in) {
    client.received.update([&](std::string& e) { e.append(in.view()); });
    in.retrieve_all();
  });
  client.client->connect();
  ASSERT_TRUE(client.received.wait([](const std::string& e) { return e == "secret words"; }))
      << client.received.get();
  EXPECT_EQ(preamble.get(), "CLEAR PREAMBLE\n");
  EXPECT_EQ(plaintext.get(), "secret words");
  client.conn.set(nullptr);
  client.client->stop();
  h.finish();
}

// Bytes sent to a client whose handshake has not happened are held by the
// layer; they count toward the high-water mark, whose policy then acts.
TEST(TlsTransport, BytesHeldForAPendingHandshakeCountTowardTheHighWaterMark) {
  ServerOptions options;
  options.connection.high_water_mark = 256 * 1024;
  options.connection.overflow = OverflowPolicy::close;
  Watched<size_t> queued_at_mark{0};
  Watched<std::vector<Ending>> endings;
  auto server_ctx = shared(server_context());
  options.tls = server_ctx;
  ServerHarness h;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&](const TcpConnectionPtr& conn) {
      if (!conn->connected()) {
        endings.update([&](auto& v) { v.push_back(ending_of(conn)); });
        return;
      }
      const std::string chunk(64 * 1024, 'x');
      for (int i = 0; i < 8; ++i) conn->send(chunk);  // 512 KiB, none of it can leave yet
      EXPECT_GE(conn->output_bytes(), 256u * 1024) << "held bytes are not counted";
    });
    s.set_on_high_water_mark(
        [&](const TcpConnectionPtr&, size_t queued) { queued_at_mark.set(queued); });
  });
  // A client that connects and never says hello.
  TcpStream silent = connect_client(h.address());
  ASSERT_TRUE(endings.wait([](const auto& v) { return !v.empty(); }));
  EXPECT_EQ(endings.get()[0].kind, CloseReason::slow_reader);
  EXPECT_GE(queued_at_mark.get(), 256u * 1024);
  h.finish();
}

// Output over the mark before the handshake paused reading (the default
// overflow policy), and the held output could drain only once the
// handshake was done, which needs reading: neither side ever finished it.
// Both roles: the server greets first, or the client asks first.
TEST(TlsTransport, RegressionOutputOverTheMarkBeforeTheHandshakeStillLetsItFinish) {
  const std::string greeting(256 * 1024, 'g');
  ServerOptions options;
  options.connection.high_water_mark = 64 * 1024;
  options.tls = shared(server_context());
  Watched<int> handshakes{0};
  Watched<size_t> received{0};
  ServerHarness h;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&](const TcpConnectionPtr& conn) {
      if (conn->connected()) conn->send(greeting);  // held: four marks' worth
    });
    s.set_on_handshake([&](const TcpConnectionPtr&) { handshakes.update([](int& n) { ++n; }); });
    s.set_on_message([&](const TcpConnectionPtr&, Buffer& in) {
      received.update([&](size_t& n) { n += in.readable_bytes(); });
      in.retrieve_all();
    });
  });
  ClientOptions co =
      tls_client(shared(client_context({TestCerts::get().cert("server"), true, "127.0.0.1"})));
  co.connection.high_water_mark = 64 * 1024;
  ClientSide client;
  client.start(h.address(), co, greeting);  // the client's request is held too
  EXPECT_TRUE(client.ready.wait([](bool r) { return r; })) << "the client's handshake never ended";
  EXPECT_TRUE(handshakes.wait([](int n) { return n == 1; })) << "the server's never ended";
  EXPECT_TRUE(client.received.wait([&](const std::string& r) {
    return r.size() == greeting.size();
  })) << client.received.get().size()
      << " of the greeting's bytes";
  EXPECT_TRUE(received.wait([&](size_t n) { return n == greeting.size(); }))
      << received.get() << " of the request's bytes";
  client.conn.get()->force_close();
  client.endings.wait([](const auto& v) { return v.size() == 1; });
  h.finish();
}

TEST(TlsTransport, AHandshakeThatNeverFinishesClosesAtTheHandshakeTimeout) {
  ServerOptions options;
  options.connection.handshake_timeout = 200ms;
  EchoServer server;
  server.start(options, shared(server_context()));
  TcpStream silent = connect_client(server.h.address());
  ASSERT_TRUE(server.endings.wait([](const auto& v) { return !v.empty(); }));
  EXPECT_EQ(server.endings.get()[0].kind, CloseReason::handshake_timeout);
  EXPECT_EQ(label(server.endings.get()[0].kind), "TLS handshake timeout");
  // The peer sees the close.
  char byte;
  auto n = silent.recv(&byte, 1);
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 0u);
  server.h.finish();
}

// A good record and a forged one in one read: the good one authenticated,
// so its plaintext reaches on_message before the close, and the close is a
// TLS error, not a failed handshake (the handshake had finished). The
// plaintext was dropped, and the close counted as "TLS handshake failed".
TEST(TlsTransport, RegressionDataBeforeAForgedRecordIsDeliveredAndTheCloseIsATlsError) {
  EchoServer server;
  server.start({}, shared(server_context()));
  auto ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  TcpStream stream = connect_client(server.h.address());
  auto session = handshake_by_hand(stream, ctx);
  ASSERT_TRUE(session) << session.error().message();
  ASSERT_TRUE(server.handshakes.wait([](int n) { return n == 1; }));
  const std::string payload = random_bytes(5000, 11);
  session->write_plaintext(payload);
  std::string wire = session->take_ciphertext();
  // An application-data record header, then 16 bytes no key made.
  wire += std::string("\x17\x03\x03\x00\x10", 5) + random_bytes(16, 12);
  ASSERT_TRUE(stream.send_all(wire));
  ASSERT_TRUE(server.endings.wait([](const auto& v) { return !v.empty(); }));
  const Ending ending = server.endings.get()[0];
  EXPECT_EQ(ending.kind, CloseReason::tls_error) << label(ending.kind) << ": " << ending.reason;
  EXPECT_NE(ending.reason.find("bad record mac"), std::string::npos) << ending.reason;
  EXPECT_TRUE(server.received.get() == payload)
      << server.received.get().size() << " of " << payload.size() << " bytes reached on_message";
  stream.close();
  server.h.finish();
}

// The blocking layer has the same shape: TLS inside TcpStream.
TEST(TlsTransport, BlockingStreamSpeaksTlsThroughTheSameCalls) {
  EchoServer server;
  server.start({}, shared(server_context()));
  auto ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  TcpStream stream = connect_client(server.h.address());
  ASSERT_TRUE(stream.start_tls(ctx, {}, 5s));
  ASSERT_NE(stream.tls(), nullptr);
  EXPECT_EQ(stream.tls()->protocol_version().substr(0, 4), "TLSv");
  const std::string payload = random_bytes(300 * 1024, 3);
  ASSERT_TRUE(stream.send_all(payload));
  EXPECT_TRUE(recv_n(stream, payload.size()) == payload) << "the echo differs";
  ASSERT_TRUE(stream.shutdown_write());  // close_notify, then FIN
  EXPECT_EQ(read_to_eof(stream), "");
  EXPECT_TRUE(server.peer_closed.wait([](int n) { return n == 1; }));
  // The end was reported once: wait() does not wake for it again (it used
  // to, at once and forever, for the TLS layer's end).
  auto after = stream.wait(std::chrono::milliseconds(50));
  ASSERT_TRUE(after) << after.error().message();
  EXPECT_FALSE(after->readable);
  stream.close();
  server.h.finish();
}

// A blocking TLS server of one connection, on a thread: accepts from
// `listener`, completes the handshake, then hands the stream to `serve`.
std::thread serve_one_tls(TcpListener& listener, const TlsContext& ctx,
                          std::function<void(TcpStream&)> serve) {
  return std::thread([&listener, &ctx, serve = std::move(serve)] {
    auto accepted = listener.accept(kWait);
    ASSERT_TRUE(accepted) << accepted.error().message();
    TcpStream& peer = accepted->stream;
    ASSERT_TRUE(peer.start_tls(ctx, {}, 5s));
    serve(peer);
  });
}

// A FIN without close_notify is what an attacker on the path can make of
// any stream: recv() used to report it as the peer's orderly end.
TEST(TlsTransport, RegressionBlockingStreamReportsAFinWithoutCloseNotifyAsTruncation) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  const TlsContext server_ctx = server_context();
  std::thread server = serve_one_tls(*listener, server_ctx, [&](TcpStream& peer) {
    ASSERT_TRUE(peer.send_all("partial"));
    ::shutdown(peer.fd(), SHUT_WR);  // the FIN alone, under the TLS layer
    char byte = 0;
    (void)::recv(peer.fd(), &byte, 1, 0);  // until the client has read and closed
  });
  auto ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  TcpStream stream = connect_client(listener->local_endpoint());
  ASSERT_TRUE(stream.start_tls(ctx, {}, 5s));
  EXPECT_EQ(recv_n(stream, 7), "partial");
  char buf[64];
  Result<size_t> n = size_t{0};
  do {
    n = stream.recv(buf, sizeof buf);
  } while (!n && n.error() == std::errc::resource_unavailable_try_again);
  ASSERT_FALSE(n) << "got " << *n << " bytes: a truncation read as the end";
  EXPECT_EQ(n.error().code(), Errc::tls_truncated);
  EXPECT_EQ(n.error().message(),
            "recv from " + listener->local_endpoint().to_string() +
                ": the peer closed without TLS close_notify: what it sent may be cut short");
  stream.close();
  server.join();
}

// A server that ends cleanly (close_notify, FIN, close) before the client
// has finished: the client's close_notify then meets a closed socket, whose
// reset made shutdown_write() fail with ENOTCONN (tcpkit connect exited 1
// where plain TCP exits 0). The peer's clean close makes it no error.
TEST(TlsTransport, RegressionHalfCloseAfterThePeersCleanCloseIsNoError) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  const TlsContext server_ctx = server_context();
  std::thread server = serve_one_tls(*listener, server_ctx, [&](TcpStream& peer) {
    ASSERT_TRUE(peer.send_all("bye"));
    peer.close();  // close_notify, FIN, and the socket is gone
  });
  auto ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  TcpStream stream = connect_client(listener->local_endpoint());
  ASSERT_TRUE(stream.start_tls(ctx, {}, 5s));
  server.join();
  std::string got;
  char buf[64];
  for (;;) {
    auto n = stream.recv(buf, sizeof buf);
    if (!n && n.error() == std::errc::resource_unavailable_try_again) continue;
    ASSERT_TRUE(n) << n.error().message();
    if (*n == 0) break;
    got.append(buf, *n);
  }
  EXPECT_EQ(got, "bye");
  ASSERT_TRUE(stream.tls()->peer_closed());
  auto shut = stream.shutdown_write();
  EXPECT_TRUE(shut) << shut.error().message();
  stream.close();
}

// How a blocking TLS stream ends: 0 after the peer's close_notify, else the
// error (Errc::tls_truncated for a FIN alone).
Result<size_t> end_of(TcpStream& stream) {
  char buf[256];
  for (;;) {
    auto n = stream.recv(buf, sizeof buf);
    if (!n && n.error() == std::errc::resource_unavailable_try_again) continue;
    if (!n || *n == 0) return n;
  }
}

// A close that the server decides ends TLS with close_notify: force_close()
// in the loop's thread (serve's "message too large") and from another
// thread, the idle timeout. They sent a FIN alone, which a TLS client must
// report as a possible truncation (tcpkit connect did, and exited 1).
// abort() stays abrupt.
TEST(TlsTransport, RegressionACloseThisSideDecidesSendsCloseNotify) {
  ServerHarness h;
  ServerOptions options;
  options.tls = shared(server_context());
  options.connection.idle_timeout = 500ms;
  Watched<TcpConnectionPtr> kept;
  h.start(options, [&](TcpServer& s) {
    s.set_on_message([&](const TcpConnectionPtr& conn, Buffer& in) {
      const std::string what = in.retrieve_all_as_string();
      conn->send("reply to " + what);
      if (what == "force_close") conn->force_close();
      if (what == "abort") conn->abort();
      if (what == "from_a_thread") kept.set(conn);
      // "idle": the idle timeout closes it.
    });
  });
  auto ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  for (const std::string what : {"force_close", "from_a_thread", "idle", "abort"}) {
    SCOPED_TRACE(what);
    TcpStream stream = connect_client(h.address());
    ASSERT_TRUE(stream.start_tls(ctx, {}, 5s));
    ASSERT_TRUE(stream.send_all(what));
    if (what == "abort") {
      auto end = end_of(stream);
      EXPECT_FALSE(end && *end == 0) << "an abort read as a clean end";
      continue;
    }
    EXPECT_EQ(recv_n(stream, 9 + what.size()), "reply to " + what);
    if (what == "from_a_thread") {
      ASSERT_TRUE(kept.wait([](const TcpConnectionPtr& c) { return c != nullptr; }));
      kept.get()->force_close();
    }
    auto end = end_of(stream);
    ASSERT_TRUE(end) << end.error().message();
    EXPECT_EQ(*end, 0u);
    EXPECT_TRUE(stream.tls()->peer_closed());
  }
  kept.set(nullptr);
  h.finish();
}

// A FIN without close_notify may be an attacker's cut: the connection still
// takes it for the peer's end (what came before is delivered, the replies
// still go out, the close is clean), and tls_truncated() tells it from the
// clean end that close_notify makes. It used to be a plain close, which
// tcpkit relay logged as "closed by client".
TEST(TlsTransport, RegressionAServerTellsAClientsFinWithoutCloseNotifyFromACleanEnd) {
  EchoServer server;
  server.start({}, shared(server_context()));
  auto ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  for (const bool cut : {true, false}) {
    SCOPED_TRACE(cut ? "FIN alone" : "close_notify, then FIN");
    TcpStream stream = connect_client(server.h.address());
    ASSERT_TRUE(stream.start_tls(ctx, {}, 5s));
    ASSERT_TRUE(stream.send_all("the last words"));
    if (cut) {
      ASSERT_EQ(::shutdown(stream.fd(), SHUT_WR), 0);  // under the TLS layer
    } else {
      ASSERT_TRUE(stream.shutdown_write());
    }
    EXPECT_EQ(recv_n(stream, 14), "the last words") << "the echo after the FIN was lost";
    auto end = end_of(stream);
    ASSERT_TRUE(end) << end.error().message();
    EXPECT_EQ(*end, 0u) << "the server's close_notify";
    stream.close();
    const size_t n = cut ? 1 : 2;
    ASSERT_TRUE(server.endings.wait([n](const auto& v) { return v.size() == n; }));
    const Ending ending = server.endings.get()[n - 1];
    EXPECT_EQ(ending.kind, CloseReason::peer_closed) << ending.reason;
    EXPECT_EQ(ending.tls_truncated, cut);
  }
  server.h.finish();
}

// The same for a client whose server ends with a FIN alone; on_peer_closed
// can ask already.
TEST(TlsTransport, RegressionAClientTellsAServersFinWithoutCloseNotifyFromACleanEnd) {
  auto ctx = shared(client_context({TestCerts::get().cert("server"), true, "127.0.0.1"}));
  const TlsContext server_ctx = server_context();
  for (const bool cut : {true, false}) {
    SCOPED_TRACE(cut ? "FIN alone" : "close_notify, then FIN");
    auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
    ASSERT_TRUE(listener) << listener.error().message();
    std::thread server = serve_one_tls(*listener, server_ctx, [&](TcpStream& peer) {
      ASSERT_TRUE(peer.send_all("partial"));
      if (cut) {
        ::shutdown(peer.fd(), SHUT_WR);  // the FIN alone, under the TLS layer
      } else {
        ASSERT_TRUE(peer.shutdown_write());
      }
      char byte = 0;
      (void)::recv(peer.fd(), &byte, 1, 0);  // until the client has answered
    });
    ClientSide client;
    Watched<int> truncated_at_fin{-1};
    client.on_peer_closed = [&](const TcpConnectionPtr& conn) {
      truncated_at_fin.set(conn->tls_truncated() ? 1 : 0);
      conn->shutdown();
    };
    client.start(listener->local_endpoint(), tls_client(ctx));
    ASSERT_TRUE(truncated_at_fin.wait([](int t) { return t >= 0; }));
    EXPECT_EQ(truncated_at_fin.get(), cut ? 1 : 0);
    EXPECT_EQ(client.received.get(), "partial");
    ASSERT_TRUE(client.endings.wait([](const auto& v) { return v.size() == 1; }));
    EXPECT_EQ(client.endings.get()[0].tls_truncated, cut);
    server.join();
  }
}

// The blocking layer, likewise: a good record and a forged one in one
// read. recv() returned the error first, and the good record's bytes only
// on the call after, which then waited on the socket for the error again.
TEST(TlsTransport, RegressionBlockingStreamReadsDataBeforeAForgedRecordThenTheError) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  const TlsContext server_ctx = server_context();
  const std::string payload = random_bytes(1000, 21);
  std::promise<void> both_sent;
  std::thread server = serve_one_tls(*listener, server_ctx, [&](TcpStream& peer) {
    ASSERT_TRUE(peer.send_all(payload));
    // An application-data record header, then 16 bytes no key made.
    const std::string forged = std::string("\x17\x03\x03\x00\x10", 5) + random_bytes(16, 22);
    ASSERT_EQ(::send(peer.fd(), forged.data(), forged.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(forged.size()));
    both_sent.set_value();
    char byte = 0;
    (void)::recv(peer.fd(), &byte, 1, 0);  // until the client has read and closed
  });
  auto ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  TcpStream stream = connect_client(listener->local_endpoint());
  ASSERT_TRUE(stream.start_tls(ctx, {}, 5s));
  ASSERT_EQ(both_sent.get_future().wait_for(kWait), std::future_status::ready);
  std::this_thread::sleep_for(20ms);  // both in the socket: one read takes them
  EXPECT_TRUE(recv_n(stream, payload.size()) == payload);
  char buf[64];
  auto n = stream.recv(buf, sizeof buf);
  ASSERT_FALSE(n) << "got " << *n << " bytes after the forged record";
  EXPECT_NE(n.error().message().find("bad record mac"), std::string::npos) << n.error().message();
  stream.close();
  server.join();
}

TEST(TlsTransport, BlockingStreamReportsARejectedCertificate) {
  EchoServer server;
  server.start({}, shared(server_context()));
  auto ctx = client_context({"", true, "localhost"});
  TcpStream stream = connect_client(server.h.address());
  auto done = stream.start_tls(ctx, {}, 5s);
  ASSERT_FALSE(done);
  EXPECT_EQ(done.error().message(), "TLS handshake with " + server.h.address().to_string() +
                                        ": certificate verify failed: self-signed certificate");
  stream.close();
  ASSERT_TRUE(server.endings.wait([](const auto& v) { return !v.empty(); }));
  server.h.finish();
}

}  // namespace

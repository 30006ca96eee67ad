// TlsConnection on the reactor over loopback: a TcpServer and a TcpClient,
// each wrapping its TcpConnection, exchange data byte-exact, end with
// close_notify, and report a rejected certificate through on_error.
#include "tcpkit/tls_connection.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tcpkit/tcp_client.h"
#include "tcpkit/tls_context.h"
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

// What the TLS echo server saw.
struct ServerSide {
  Watched<int> messages{0};
  Watched<int> peer_closed{0};
  Watched<std::vector<std::string>> errors;

  void configure(TcpServer& server, const TlsContext& context) {
    server.set_on_connection([this, &context](const TcpConnectionPtr& conn) {
      if (!conn->connected()) return;
      auto tls = TlsConnection::attach(conn, context);
      ASSERT_TRUE(tls) << tls.error().message();
      (*tls)->set_on_message([this](const TlsConnectionPtr& t, Buffer& in) {
        messages.update([](int& n) { ++n; });
        t->send(in.view());
        in.retrieve_all();
      });
      (*tls)->set_on_peer_closed([this](const TlsConnectionPtr& t) {
        peer_closed.update([](int& n) { ++n; });
        t->shutdown();
      });
      (*tls)->set_on_error([this](const TlsConnectionPtr&, const Error& e) {
        errors.update([&](auto& v) { v.push_back(e.message()); });
      });
    });
  }
};

// A TcpClient on its own loop whose connection speaks TLS.
struct ClientSide {
  LoopThread loop;
  std::unique_ptr<TcpClient> client;
  Watched<TlsConnectionPtr> tls;
  Watched<bool> handshake{false};
  Watched<bool> down{false};
  Watched<std::string> received;
  Watched<std::vector<std::string>> errors;

  void start(const Endpoint& server, const TlsContext& context, std::string first_words = "") {
    client = std::make_unique<TcpClient>(loop.loop(), server);
    client->set_on_connection([this, &context, first_words](const TcpConnectionPtr& conn) {
      if (!conn->connected()) {
        down.set(true);
        return;
      }
      auto attached = TlsConnection::attach(conn, context);
      ASSERT_TRUE(attached) << attached.error().message();
      auto t = *attached;
      t->set_on_handshake([this](const TlsConnectionPtr&) { handshake.set(true); });
      t->set_on_message([this](const TlsConnectionPtr&, Buffer& in) {
        received.update([&](std::string& s) { s.append(in.view()); });
        in.retrieve_all();
      });
      t->set_on_error([this](const TlsConnectionPtr&, const Error& e) {
        errors.update([&](auto& v) { v.push_back(e.message()); });
      });
      if (!first_words.empty()) t->send(first_words);  // held until the handshake is done
      tls.set(t);
    });
    client->connect();
  }

  ~ClientSide() {
    tls.set(nullptr);
    client.reset();
  }
};

TEST(TlsConnection, ReactorClientAndServerExchangeMegabytesByteExact) {
  auto server_ctx = server_context();
  ServerSide server;
  ServerHarness h;
  h.start({}, [&](TcpServer& s) { server.configure(s, server_ctx); });

  auto client_ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  ClientSide client;
  client.start(h.address(), client_ctx, "hello over TLS");
  ASSERT_TRUE(client.handshake.wait([](bool done) { return done; }));
  ASSERT_TRUE(client.received.wait([](const std::string& s) { return s == "hello over TLS"; }))
      << client.received.get();

  // From the test thread: send() forwards to the client's loop, in order.
  const std::string payload = random_bytes(2 * 1024 * 1024 + 11, 7);
  auto tls = client.tls.get();
  for (size_t offset = 0; offset < payload.size(); offset += 100'000) {
    tls->send(std::string_view(payload).substr(offset, 100'000));
  }
  const size_t expected = 14 + payload.size();
  ASSERT_TRUE(client.received.wait([&](const std::string& s) { return s.size() >= expected; }, 30s))
      << client.received.get().size() << " of " << expected << " bytes came back";
  EXPECT_TRUE(client.received.get() == "hello over TLS" + payload) << "the echo differs";
  EXPECT_GT(server.messages.get(), 0);

  // close_notify from the client; the server answers with its own and FIN.
  tls->shutdown();
  EXPECT_TRUE(server.peer_closed.wait([](int n) { return n == 1; }));
  EXPECT_TRUE(client.down.wait([](bool d) { return d; }));
  EXPECT_TRUE(client.loop.call([&] { return tls->session().peer_closed(); }))
      << "the server's close_notify did not arrive";
  EXPECT_TRUE(server.errors.get().empty()) << server.errors.get().at(0);
  EXPECT_TRUE(client.errors.get().empty()) << client.errors.get().at(0);
  tls.reset();
  h.finish();
}

TEST(TlsConnection, RejectedCertificateIsReportedAndNothingIsSent) {
  auto server_ctx = server_context();
  ServerSide server;
  ServerHarness h;
  h.start({}, [&](TcpServer& s) { server.configure(s, server_ctx); });

  // The system's CAs do not know the test server's self-signed certificate.
  auto client_ctx = client_context({"", true, "localhost"});
  ClientSide client;
  client.start(h.address(), client_ctx, "a secret");
  ASSERT_TRUE(client.errors.wait([](const auto& v) { return !v.empty(); }));
  EXPECT_EQ(client.errors.get().at(0), "TLS handshake with " + h.address().to_string() +
                                           ": certificate verify failed: self-signed certificate");
  // The alert tells the server why; the connection then closes.
  ASSERT_TRUE(server.errors.wait([](const auto& v) { return !v.empty(); }));
  EXPECT_NE(server.errors.get().at(0).find("alert"), std::string::npos) << server.errors.get().at(0);
  EXPECT_TRUE(client.down.wait([](bool d) { return d; }));
  EXPECT_FALSE(client.handshake.get());
  EXPECT_EQ(server.messages.get(), 0);
  h.finish();
}

// wrap(): the connection's bytes stay the caller's to route. Here a line in
// the clear comes first (as a PROXY header does), then the TLS hello.
TEST(TlsConnection, WrapLeavesRoutingToTheCallerAfterAClearPreamble) {
  auto server_ctx = server_context();
  struct Routed {
    TlsConnectionPtr tls;
    bool preamble_done = false;
  };
  Watched<std::string> preamble;
  Watched<std::string> plaintext;
  ServerHarness h;
  h.start({}, [&](TcpServer& s) {
    s.set_on_connection([&](const TcpConnectionPtr& conn) {
      if (!conn->connected()) return;
      auto tls = TlsConnection::wrap(conn, server_ctx);
      ASSERT_TRUE(tls) << tls.error().message();
      (*tls)->set_on_message([&](const TlsConnectionPtr& t, Buffer& in) {
        plaintext.update([&](std::string& p) { p.append(in.view()); });
        t->send(in.view());
        in.retrieve_all();
      });
      conn->set_context(Routed{*tls, false});
    });
    s.set_on_message([&](const TcpConnectionPtr& conn, Buffer& in) {
      Routed* routed = conn->context<Routed>();
      ASSERT_NE(routed, nullptr);
      if (!routed->preamble_done) {
        const char* eol = in.find_eol();
        if (eol == nullptr) return;  // the line is not whole yet
        preamble.set(in.retrieve_as_string(static_cast<size_t>(eol - in.peek()) + 1));
        routed->preamble_done = true;
      }
      if (in.readable_bytes() > 0) routed->tls->on_ciphertext(in);
    });
  });

  auto client_ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
  LoopThread loop;
  TcpClient client(loop.loop(), h.address());
  Watched<std::string> echoed;
  Watched<TlsConnectionPtr> client_tls;
  client.set_on_connection([&](const TcpConnectionPtr& conn) {
    if (!conn->connected()) return;
    conn->send("CLEAR PREAMBLE\n");
    auto t = TlsConnection::attach(conn, client_ctx);
    ASSERT_TRUE(t) << t.error().message();
    (*t)->set_on_message([&](const TlsConnectionPtr&, Buffer& in) {
      echoed.update([&](std::string& e) { e.append(in.view()); });
      in.retrieve_all();
    });
    (*t)->send("secret words");
    client_tls.set(*t);
  });
  client.connect();
  ASSERT_TRUE(echoed.wait([](const std::string& e) { return e == "secret words"; })) << echoed.get();
  EXPECT_EQ(preamble.get(), "CLEAR PREAMBLE\n");
  EXPECT_EQ(plaintext.get(), "secret words");
  client_tls.set(nullptr);
  client.stop();
  h.finish();
}

}  // namespace

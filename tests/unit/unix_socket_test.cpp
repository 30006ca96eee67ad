// Unix-domain sockets through the TCP API: TcpListener and TcpStream over a
// path and an abstract name, TcpServer serving a path, and the socket file's
// life: a stale one replaced, a live one refused, a non-socket left alone,
// permissions set, ours removed on close.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tcpkit/endpoint.h"
#include "tcpkit/tcp_listener.h"
#include "tcpkit/tcp_stream.h"
#include "tcpkit/unique_fd.h"
#include "test_util.h"

using namespace std::chrono_literals;
using namespace tcpkit;
using namespace tcpkit::test;

namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class UnixSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tcpkit-unix-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  Endpoint path_endpoint(const std::string& name) {
    return *Endpoint::unix_socket((dir_ / name).string());
  }
  bool is_socket(const std::string& name) {
    struct stat st {};
    return ::lstat((dir_ / name).c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
  }

  fs::path dir_;
};

TEST_F(UnixSocket, ListenerAndStreamTalkOverAPathWithCredentials) {
  auto address = path_endpoint("a.sock");
  auto listener = TcpListener::bind(address);
  ASSERT_TRUE(listener) << listener.error().message();
  EXPECT_EQ(listener->local_endpoint(), address);
  EXPECT_TRUE(is_socket("a.sock"));

  auto client = TcpStream::connect(address, 2s);
  ASSERT_TRUE(client) << client.error().message();
  EXPECT_TRUE(client->set_nodelay(true)) << "TCP options are skipped on a Unix socket";
  auto accepted = listener->accept(kWait);
  ASSERT_TRUE(accepted) << accepted.error().message();
  auto who = accepted->peer.credentials();
  ASSERT_TRUE(who);
  EXPECT_EQ(who->pid, ::getpid());
  EXPECT_EQ(who->uid, ::getuid());
  EXPECT_EQ(accepted->peer.unix_path(), address.unix_path());
  EXPECT_EQ(accepted->stream.peer_endpoint().to_string(),
            "unix:" + address.unix_path() + " (pid " + std::to_string(::getpid()) + ", uid " +
                std::to_string(::getuid()) + ")");

  ASSERT_TRUE(client->send_all("ping"));
  EXPECT_EQ(recv_n(accepted->stream, 4), "ping");
  ASSERT_TRUE(accepted->stream.send_all("pong"));
  ASSERT_TRUE(accepted->stream.shutdown_write());
  EXPECT_EQ(read_to_eof(*client), "pong");
}

TEST_F(UnixSocket, AbstractNameNeedsNoFile) {
  auto address = *Endpoint::unix_socket("@tcpkit-test-" + std::to_string(::getpid()));
  auto listener = TcpListener::bind(address);
  ASSERT_TRUE(listener) << listener.error().message();
  auto client = TcpStream::connect(address, 2s);
  ASSERT_TRUE(client) << client.error().message();
  auto accepted = listener->accept(kWait);
  ASSERT_TRUE(accepted);
  ASSERT_TRUE(client->send_all("x"));
  EXPECT_EQ(recv_n(accepted->stream, 1), "x");
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(UnixSocket, ListenerRemovesItsFileWhenDestroyed) {
  {
    auto listener = TcpListener::bind(path_endpoint("gone.sock"));
    ASSERT_TRUE(listener) << listener.error().message();
    EXPECT_TRUE(is_socket("gone.sock"));
  }
  EXPECT_FALSE(fs::exists(dir_ / "gone.sock"));
}

TEST_F(UnixSocket, LivePathIsRefusedNamingThePid) {
  auto address = path_endpoint("live.sock");
  auto first = TcpListener::bind(address);
  ASSERT_TRUE(first) << first.error().message();
  auto second = TcpListener::bind(address);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), std::errc::address_in_use);
  EXPECT_NE(second.error().message().find(address.unix_path()), std::string::npos)
      << second.error().message();
  EXPECT_NE(second.error().message().find("pid " + std::to_string(::getpid())), std::string::npos)
      << second.error().message();
  // The first server keeps its file and its clients.
  EXPECT_TRUE(is_socket("live.sock"));
  EXPECT_TRUE(TcpStream::connect(address, 2s));
}

TEST_F(UnixSocket, StaleFileIsReplaced) {
  auto address = path_endpoint("stale.sock");
  {
    auto dead = TcpListener::bind(address);
    ASSERT_TRUE(dead);
    // A server that dies keeps its file: hand the socket away, then close it.
    UniqueFd fd = dead->release_fd();
  }
  ASSERT_TRUE(is_socket("stale.sock")) << "a dead server's file stays";
  EXPECT_FALSE(TcpStream::connect(address, 2s));
  auto removed = TcpListener::remove_stale_socket(address);
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_TRUE(*removed);
  EXPECT_FALSE(fs::exists(dir_ / "stale.sock"));
  EXPECT_FALSE(*TcpListener::remove_stale_socket(address)) << "nothing left to remove";
}

TEST_F(UnixSocket, BindReplacesAStaleFileByItself) {
  auto address = path_endpoint("stale.sock");
  {
    auto dead = TcpListener::bind(address);
    ASSERT_TRUE(dead);
    UniqueFd fd = dead->release_fd();
  }
  auto listener = TcpListener::bind(address);
  ASSERT_TRUE(listener) << listener.error().message();
  EXPECT_TRUE(TcpStream::connect(address, 2s));
}

TEST_F(UnixSocket, NonSocketFileIsRefusedAndKept) {
  { std::ofstream(dir_ / "data.txt") << "precious"; }
  auto listener = TcpListener::bind(path_endpoint("data.txt"));
  ASSERT_FALSE(listener);
  EXPECT_EQ(listener.error().code(), std::errc::file_exists);
  EXPECT_NE(listener.error().message().find("not a socket"), std::string::npos)
      << listener.error().message();
  std::ifstream in(dir_ / "data.txt");
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(UnixSocket, ModeSetsTheFilePermissions) {
  ListenOptions options;
  options.unix_mode = 0600;
  auto listener = TcpListener::bind(path_endpoint("mode.sock"), options);
  ASSERT_TRUE(listener) << listener.error().message();
  struct stat st {};
  ASSERT_EQ(::lstat((dir_ / "mode.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(UnixSocket, ServerEchoesOverAPathAndRemovesItsFileOnStop) {
  ServerHarness h;
  Tally tally;
  ServerOptions options;
  options.threads = 2;
  h.start(
      options,
      [&](TcpServer& s) {
        s.set_on_connection(tally.callback());
        s.set_on_message(echo);
      },
      path_endpoint("server.sock"));
  EXPECT_TRUE(h.address().is_unix());
  {
    auto c = connect_client(h.address());
    std::string big(256 * 1024, '\0');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
    ASSERT_TRUE(c.send_all(big));
    EXPECT_EQ(recv_n(c, big.size()), big);
    ASSERT_TRUE(tally.up.wait([](int n) { return n == 1; }));
    auto conn = tally.last.get();
    ASSERT_TRUE(conn->peer_endpoint().credentials());
    EXPECT_EQ(conn->peer_endpoint().credentials()->pid, ::getpid());
    EXPECT_TRUE(conn->local_endpoint().is_unix());
  }
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  std::promise<void> stopped;
  h.base().call([&] { h.server().stop(1s, [&] { stopped.set_value(); }); });
  ASSERT_EQ(stopped.get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(fs::exists(dir_ / "server.sock")) << "a clean stop removes the socket file";
  h.finish(/*listening=*/false);
}

// Regression: a Unix client sent and closed at once. On io_uring the echo
// waited for the ring while the hang-up came, and the hang-up closed the
// connection as a clean close: "peer closed", with the echo lost (epoll's
// send() failed with EPIPE: connection reset). Output that can no longer
// go anywhere is not a clean close: a connection that closed cleanly sent
// its whole echo (which the client's kernel took, before the close).
TEST_F(UnixSocket, APeerGoneWithItsEchoUnsentIsNoCleanClose) {
  constexpr size_t kMessage = 5000;
  constexpr int kClients = 16;
  ServerHarness h;
  Watched<std::vector<std::pair<std::error_code, uint64_t>>> closes;
  ServerOptions options;
  options.threads = 1;
  h.start(
      options,
      [&](TcpServer& s) {
        s.set_on_connection([&](const TcpConnectionPtr& conn) {
          if (conn->disconnected()) {
            closes.update(
                [&](auto& v) { v.emplace_back(conn->close_reason(), conn->bytes_sent()); });
          }
        });
        s.set_on_message(echo);
      },
      path_endpoint("gone.sock"));
  for (int i = 0; i < kClients; ++i) {
    auto c = connect_client(h.address());
    ASSERT_TRUE(c.send_all(std::string(kMessage, 'g')));
    c.close();
  }
  ASSERT_TRUE(closes.wait([](const auto& v) { return v.size() == kClients; }));
  for (const auto& [reason, sent] : closes.get()) {
    if (reason == make_error_code(Errc::peer_closed)) {
      EXPECT_EQ(sent, kMessage) << "a lost echo counted as a clean close";
    }
  }
  h.finish();
}

}  // namespace

#include "tcpkit/tcp_stream.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tcpkit/tcp_listener.h"
#include "tcpkit/unique_fd.h"

using namespace std::chrono_literals;
using tcpkit::Endpoint;
using tcpkit::Errc;
using tcpkit::ListenOptions;
using tcpkit::TcpListener;
using tcpkit::TcpStream;

namespace {

// Every blocking call in these tests has a deadline, so a broken library makes
// a test fail instead of hanging CTest until its own timeout.
constexpr auto kWait = 5s;

// Both ends of one loopback connection.
struct Pair {
  TcpStream client;
  TcpStream server;
};

Pair connect_pair(TcpListener& listener) {
  Pair p;
  auto client = TcpStream::connect(listener.local_endpoint(), kWait);
  EXPECT_TRUE(client) << client.error().message();
  if (!client) return p;
  auto accepted = listener.accept(kWait);
  EXPECT_TRUE(accepted) << accepted.error().message();
  if (!accepted) return p;
  p.client = std::move(*client);
  p.server = std::move(accepted->stream);
  EXPECT_TRUE(p.client.set_recv_timeout(kWait));
  EXPECT_TRUE(p.server.set_recv_timeout(kWait));
  return p;
}

// Reads until EOF (recv returns 0) and returns everything read.
std::string read_to_eof(TcpStream& s) {
  std::string out;
  char buf[4096];
  for (;;) {
    auto n = s.recv(buf, sizeof buf);
    EXPECT_TRUE(n) << n.error().message();
    if (!n || *n == 0) return out;
    out.append(buf, *n);
  }
}

std::string recv_exact_string(TcpStream& s, size_t len) {
  std::string out(len, '\0');
  auto r = s.recv_exact(out.data(), len);
  EXPECT_TRUE(r) << r.error().message();
  return out;
}

// Tries to bind [::1]:0; the tests skip IPv6 only when the host has no IPv6 loopback.
tcpkit::Result<TcpListener> bind_v6_loopback() {
  return TcpListener::bind(Endpoint::loopback_v6(0));
}

void round_trip(TcpListener& listener) {
  Pair p = connect_pair(listener);
  ASSERT_TRUE(p.client.is_open());
  ASSERT_TRUE(p.server.is_open());
  // Each side sees the other's address: the client's local end is the server's peer.
  EXPECT_EQ(p.client.local_endpoint(), p.server.peer_endpoint());
  EXPECT_EQ(p.client.peer_endpoint(), listener.local_endpoint());
  EXPECT_EQ(p.server.local_endpoint(), listener.local_endpoint());

  ASSERT_TRUE(p.client.send_all("hello, server"));
  EXPECT_EQ(recv_exact_string(p.server, 13), "hello, server");
  ASSERT_TRUE(p.server.send_all("收到了你的訊息"));
  EXPECT_EQ(recv_exact_string(p.client, std::strlen("收到了你的訊息")), "收到了你的訊息");
}

}  // namespace

TEST(TcpStream, RoundTripOverIpv4) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  round_trip(*listener);
}

TEST(TcpStream, RoundTripOverIpv6) {
  auto listener = bind_v6_loopback();
  if (!listener) GTEST_SKIP() << "no IPv6 loopback: " << listener.error().message();
  EXPECT_TRUE(listener->local_endpoint().is_v6());
  round_trip(*listener);
}

TEST(TcpStream, ConnectByHostPortTextTriesEachAddress) {
  // "localhost" may resolve to ::1 first while the listener is IPv4 only; the
  // string overload must then fall through to 127.0.0.1.
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  auto text = "localhost:" + std::to_string(listener->local_endpoint().port());
  auto client = TcpStream::connect(text, kWait);
  ASSERT_TRUE(client) << client.error().message();
  auto accepted = listener->accept(kWait);
  ASSERT_TRUE(accepted) << accepted.error().message();
  EXPECT_EQ(accepted->peer, client->local_endpoint());
}

TEST(TcpStream, ConnectByTextReportsABadAddress) {
  auto client = TcpStream::connect("127.0.0.1", 1s);
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code(), Errc::missing_port);
  EXPECT_NE(client.error().message().find("127.0.0.1"), std::string::npos)
      << client.error().message();
}

TEST(TcpStream, RecvReturnsWhatHasArrivedUpToTheBufferSize) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  ASSERT_TRUE(p.client.send_all("0123456789"));
  // A small buffer gets a partial read; the rest stays queued for the next recv.
  char buf[4];
  auto n = p.server.recv(buf, sizeof buf);
  ASSERT_TRUE(n) << n.error().message();
  ASSERT_GE(*n, 1u);
  ASSERT_LE(*n, 4u);
  std::string got(buf, *n);
  got += recv_exact_string(p.server, 10 - *n);
  EXPECT_EQ(got, "0123456789");
}

TEST(TcpStream, RecvExactJoinsSeparateSends) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  ASSERT_TRUE(p.client.set_nodelay(true));
  std::thread sender([&] {
    for (const char* piece : {"ab", "cd", "ef"}) EXPECT_TRUE(p.client.send_all(piece));
  });
  EXPECT_EQ(recv_exact_string(p.server, 6), "abcdef");
  sender.join();
}

TEST(TcpStream, LargePayloadArrivesByteExact) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);

  // 4 MiB is far more than the socket buffers hold, so send_all must loop over
  // partial writes while the reader drains the other end.
  constexpr size_t kSize = 4u << 20;
  std::vector<unsigned char> payload(kSize);
  for (size_t i = 0; i < kSize; ++i) payload[i] = static_cast<unsigned char>((i * 7919u) >> 3);

  tcpkit::Result<void> sent;
  std::thread sender([&] {
    sent = p.client.send_all(payload.data(), payload.size());
    // The FIN marks the end, so the reader can also check nothing extra arrives.
    if (sent) sent = p.client.shutdown_write();
  });

  std::vector<unsigned char> received;
  received.reserve(kSize);
  std::vector<unsigned char> buf(64 * 1024);
  for (;;) {
    auto n = p.server.recv(buf.data(), buf.size());
    ASSERT_TRUE(n) << n.error().message();
    if (*n == 0) break;
    received.insert(received.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*n));
    if (received.size() > kSize) break;
  }
  sender.join();
  ASSERT_TRUE(sent) << sent.error().message();
  ASSERT_EQ(received.size(), kSize);
  EXPECT_TRUE(received == payload) << "payload corrupted in transit";
}

TEST(TcpStream, HalfCloseDeliversEverythingThenEofAndThePeerCanStillReply) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);

  // The client sends its whole request, then half-closes: FIN after the data.
  const std::string request(100000, 'q');
  std::thread client_side([&] {
    EXPECT_TRUE(p.client.send_all(request));
    EXPECT_TRUE(p.client.shutdown_write());
  });
  // The server sees every byte, then recv() returns 0 (the tutorial's "0 bytes").
  EXPECT_EQ(read_to_eof(p.server), request);
  client_side.join();
  char c;
  auto again = p.server.recv(&c, 1);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*again, 0u) << "EOF must be sticky";

  // Our half-close did not close the other direction: the server can answer.
  ASSERT_TRUE(p.server.send_all("reply after your FIN"));
  ASSERT_TRUE(p.server.shutdown_write());
  EXPECT_EQ(read_to_eof(p.client), "reply after your FIN");
}

TEST(TcpStream, ConnectRefusedNamesTheAddress) {
  // A bound but not listening socket holds the port, so nothing else can start
  // listening on it while the test runs, and a SYN to it is answered with RST.
  tcpkit::UniqueFd holder(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(holder.valid()) << std::strerror(errno);
  auto any_port = Endpoint::loopback_v4(0);
  ASSERT_EQ(::bind(holder.get(), any_port.sockaddr_ptr(), any_port.sockaddr_len()), 0)
      << std::strerror(errno);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ASSERT_EQ(::getsockname(holder.get(), reinterpret_cast<sockaddr*>(&ss), &len), 0);
  Endpoint target(reinterpret_cast<sockaddr*>(&ss), len);

  auto client = TcpStream::connect(target, kWait);
  ASSERT_FALSE(client);
  EXPECT_TRUE(client.error() == std::errc::connection_refused) << client.error().message();
  EXPECT_EQ(client.error().message(), "connect " + target.to_string() + ": Connection refused");

  // The blocking (no timeout) path reports the same.
  auto blocking = TcpStream::connect(target);
  ASSERT_FALSE(blocking);
  EXPECT_TRUE(blocking.error() == std::errc::connection_refused) << blocking.error().message();
}

TEST(TcpStream, ConnectTimesOutWhenTheBacklogIsFull) {
  // Linux drops a SYN while the listener's accept queue is full, so the client
  // gets no answer at all and its connect times out, which is as close to an
  // unreachable host as loopback allows. The queue holds backlog + 1
  // connections; nothing accepts them here.
  ListenOptions options;
  options.backlog = 0;
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0), options);
  ASSERT_TRUE(listener) << listener.error().message();
  const Endpoint target = listener->local_endpoint();

  std::vector<TcpStream> queued;
  bool timed_out = false;
  for (int attempt = 0; attempt < 64 && !timed_out; ++attempt) {
    auto start = std::chrono::steady_clock::now();
    auto client = TcpStream::connect(target, 200ms);
    if (client) {
      queued.push_back(std::move(*client));
      continue;
    }
    ASSERT_TRUE(client.error() == std::errc::timed_out) << client.error().message();
    EXPECT_EQ(client.error().message(), "connect " + target.to_string() + ": Connection timed out");
    // A lower bound only: the timeout must not fire early.
    EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
    timed_out = true;
  }
  ASSERT_TRUE(timed_out) << "no connect timed out after " << queued.size() << " queued connections";
}

TEST(TcpStream, RecvTimeoutReportsTryAgainWithTheAddress) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  ASSERT_TRUE(p.client.set_recv_timeout(100ms));
  char buf[16];
  auto start = std::chrono::steady_clock::now();
  auto n = p.client.recv(buf, sizeof buf);
  ASSERT_FALSE(n);
  EXPECT_TRUE(n.error() == std::errc::resource_unavailable_try_again) << n.error().message();
  EXPECT_NE(n.error().message().find(listener->local_endpoint().to_string()), std::string::npos)
      << n.error().message();
  EXPECT_NE(n.error().message().find("timed out"), std::string::npos) << n.error().message();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 80ms);

  // The connection is still usable after a timeout.
  ASSERT_TRUE(p.server.send_all("late"));
  ASSERT_TRUE(p.client.set_recv_timeout(kWait));
  EXPECT_EQ(recv_exact_string(p.client, 4), "late");
}

TEST(TcpStream, RecvExactReportsPeerClosedOnEarlyEof) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  ASSERT_TRUE(p.server.send_all("abc"));
  p.server.close();
  char buf[10];
  auto r = p.client.recv_exact(buf, sizeof buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::peer_closed) << r.error().message();
  EXPECT_NE(r.error().message().find("connection closed by peer"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(std::string(buf, 3), "abc") << "bytes before the EOF are still delivered";
}

TEST(TcpStream, SendToAClosedPeerIsAnErrorNotSigpipe) {
  // Default SIGPIPE disposition, so a send without MSG_NOSIGNAL would kill this
  // process and fail the test. No handler is installed.
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ASSERT_EQ(::sigaction(SIGPIPE, &dfl, &old), 0);

  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  const std::string server_address = listener->local_endpoint().to_string();
  p.server.close();
  // Wait for the FIN so the peer is known to be gone.
  char c;
  auto eof = p.client.recv(&c, 1);
  ASSERT_TRUE(eof) << eof.error().message();
  ASSERT_EQ(*eof, 0u);

  // The first send is answered with RST; a later one fails with EPIPE (or
  // ECONNRESET when the RST is reported first).
  tcpkit::Result<void> r;
  for (int i = 0; i < 100 && r; ++i) r = p.client.send_all("x");
  ASSERT_FALSE(r) << "send to a closed peer kept succeeding";
  EXPECT_TRUE(r.error() == std::errc::broken_pipe || r.error() == std::errc::connection_reset)
      << r.error().message();
  EXPECT_NE(r.error().message().find("send to " + server_address), std::string::npos)
      << r.error().message();

  ::sigaction(SIGPIPE, &old, nullptr);
}

TEST(TcpStream, MoveTransfersOwnershipAndCloseReleases) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  const int fd = p.client.fd();
  TcpStream moved = std::move(p.client);
  EXPECT_FALSE(
      p.client.is_open());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(moved.fd(), fd);
  moved.close();
  EXPECT_FALSE(moved.is_open());
  // Closing our end is seen by the peer as EOF.
  char c;
  auto n = p.server.recv(&c, 1);
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 0u);
}

TEST(TcpStream, SocketOptionsApply) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  EXPECT_TRUE(p.client.set_nodelay(true));
  EXPECT_TRUE(p.client.set_keepalive(true));
  EXPECT_TRUE(p.client.set_send_timeout(1s));
  int keepalive = 0;
  socklen_t len = sizeof keepalive;
  ASSERT_EQ(::getsockopt(p.client.fd(), SOL_SOCKET, SO_KEEPALIVE, &keepalive, &len), 0);
  EXPECT_EQ(keepalive, 1);
  timeval tv{};
  len = sizeof tv;
  ASSERT_EQ(::getsockopt(p.client.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, &len), 0);
  EXPECT_EQ(tv.tv_sec, 1);
}

// Regression: error messages and peer_endpoint() used getpeername(), which
// fails with ENOTCONN once the peer has reset, so a failed send read
// "send to 0.0.0.0:0: Broken pipe".
TEST(TcpStream, RegressionPeerAddressSurvivesAReset) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  const Endpoint server_address = listener->local_endpoint();
  // SO_LINGER with a zero timeout makes close() send RST instead of FIN.
  linger hard{1, 0};
  ASSERT_EQ(::setsockopt(p.server.fd(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard), 0);
  p.server.close();
  char c;
  auto n = p.client.recv(&c, 1);
  ASSERT_FALSE(n) << "expected ECONNRESET, got " << *n << " bytes";
  EXPECT_TRUE(n.error() == std::errc::connection_reset) << n.error().message();
  EXPECT_EQ(n.error().message(),
            "recv from " + server_address.to_string() + ": Connection reset by peer");
  EXPECT_EQ(p.client.peer_endpoint(), server_address);
}

TEST(TcpStream, RecvTimeoutCanBeClearedWithNoTimeout) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  auto r = p.client.set_recv_timeout(TcpStream::kNoTimeout);
  ASSERT_TRUE(r) << r.error().message();
  timeval tv{1, 1};
  socklen_t len = sizeof tv;
  ASSERT_EQ(::getsockopt(p.client.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, &len), 0);
  EXPECT_EQ(tv.tv_sec, 0);
  EXPECT_EQ(tv.tv_usec, 0);
}

// The wait of a client that copies stdin to the peer (tcpkit connect, as nc):
// the stream and one more descriptor at once, each reported for itself.
TEST(TcpStream, WaitWatchesTheStreamAndAnotherDescriptor) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  tcpkit::UniqueFd read_end(pipe_fds[0]);
  tcpkit::UniqueFd write_end(pipe_fds[1]);

  auto quiet = p.client.wait(std::chrono::milliseconds(50), false, read_end.get());
  ASSERT_TRUE(quiet) << quiet.error().message();
  EXPECT_FALSE(quiet->readable || quiet->writable || quiet->other);

  auto room = p.client.wait(kWait, /*writable=*/true, read_end.get());
  ASSERT_TRUE(room) << room.error().message();
  EXPECT_TRUE(room->writable);
  EXPECT_FALSE(room->readable || room->other);

  ASSERT_EQ(::write(write_end.get(), "x", 1), 1);
  auto input = p.client.wait(kWait, false, read_end.get());
  ASSERT_TRUE(input) << input.error().message();
  EXPECT_TRUE(input->other);
  EXPECT_FALSE(input->readable);

  ASSERT_TRUE(p.server.send_all("reply"));
  auto both = p.client.wait(kWait, false, read_end.get());
  ASSERT_TRUE(both) << both.error().message();
  EXPECT_TRUE(both->readable && both->other);
  // Without another descriptor only the stream counts.
  auto alone = p.client.wait(kWait);
  ASSERT_TRUE(alone) << alone.error().message();
  EXPECT_TRUE(alone->readable);
  EXPECT_FALSE(alone->other);
}

// Regression: after the peer's FIN, wait() reported the stream readable
// forever (recv() says 0 again and again), so a client still sending stdin
// to a peer that had finished (the half-close of nc -N) had to poll the
// socket itself. Now the end of input is reported once, and a reset after
// it is a hangup with its error.
TEST(TcpStream, RegressionWaitStopsReportingTheEndOfInputAndReportsALaterReset) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  ASSERT_TRUE(p.server.shutdown_write());
  auto end = p.client.wait(kWait);
  ASSERT_TRUE(end) << end.error().message();
  EXPECT_TRUE(end->readable);
  EXPECT_FALSE(p.client.input_ended());
  EXPECT_EQ(read_to_eof(p.client), "");
  EXPECT_TRUE(p.client.input_ended());

  auto quiet = p.client.wait(std::chrono::milliseconds(50), /*writable=*/false);
  ASSERT_TRUE(quiet) << quiet.error().message();
  EXPECT_FALSE(quiet->readable || quiet->hangup) << "the end of input was reported again";
  // The client can still send, and the peer still reads.
  auto room = p.client.wait(kWait, /*writable=*/true);
  ASSERT_TRUE(room) << room.error().message();
  EXPECT_TRUE(room->writable);
  EXPECT_FALSE(room->readable || room->hangup);
  ASSERT_TRUE(p.client.send_all("still here"));
  EXPECT_EQ(recv_exact_string(p.server, 10), "still here");
  EXPECT_FALSE(p.client.pending_error());

  linger hard{1, 0};  // close() sends RST
  ASSERT_EQ(::setsockopt(p.server.fd(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard), 0);
  p.server.close();
  auto reset = p.client.wait(kWait);
  ASSERT_TRUE(reset) << reset.error().message();
  EXPECT_TRUE(reset->hangup);
  EXPECT_FALSE(reset->readable);
  // Linux names a reset that comes after the peer's FIN EPIPE, not ECONNRESET.
  const std::error_code error = p.client.pending_error();
  EXPECT_TRUE(error == std::errc::broken_pipe || error == std::errc::connection_reset)
      << error.message();
  EXPECT_FALSE(p.client.pending_error()) << "reading the error clears it";
}

namespace {

// Fills the client's way to the server (which does not read) until the
// kernels take no more: bytes that stay unacknowledged.
size_t fill_until_full(TcpStream& client) {
  const std::string chunk(64 * 1024, 'f');
  size_t sent = 0;
  for (int i = 0; i < 4096; ++i) {
    auto n = client.send_some(chunk);
    EXPECT_TRUE(n) << n.error().message();
    if (!n || *n == 0) break;
    sent += *n;
  }
  return sent;
}

}  // namespace

// finish_sending() is done once the peer has taken every byte, whether or
// not it answers our FIN: a peer that read all and closed is no failure.
TEST(TcpStream, FinishSendingReturnsOnceThePeerHasTakenEverything) {
  auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
  ASSERT_TRUE(listener) << listener.error().message();
  Pair p = connect_pair(*listener);
  const std::string data(300 * 1024, 'd');
  std::thread reader([&] {
    EXPECT_EQ(read_to_eof(p.server), data);
    p.server.close();
  });
  ASSERT_TRUE(p.client.send_all(data));
  auto finished = p.client.finish_sending(kWait);
  EXPECT_TRUE(finished) << finished.error().message();
  reader.join();
}

// A peer that resets with bytes still on their way did not take them all:
// the caller hears so, also when the reset came before the half-close.
TEST(TcpStream, FinishSendingReportsAResetBeforeThePeerTookEverything) {
  for (const bool reset_first : {false, true}) {
    auto listener = TcpListener::bind(Endpoint::loopback_v4(0));
    ASSERT_TRUE(listener) << listener.error().message();
    Pair p = connect_pair(*listener);
    ASSERT_GT(fill_until_full(p.client), 0u);
    // Unread bytes make the server's close a reset.
    p.server.close();
    if (reset_first) std::this_thread::sleep_for(100ms);
    auto finished = p.client.finish_sending(kWait);
    ASSERT_FALSE(finished) << "reset_first " << reset_first;
    EXPECT_TRUE(finished.error() == std::errc::connection_reset) << finished.error().message();
  }
}

namespace {

// write_all() on a pipe left non-blocking (as another program may leave a
// shared stdout): a full pipe is waited for, not a failure.
struct Pipe {
  tcpkit::UniqueFd reader;
  tcpkit::UniqueFd writer;
};

Pipe nonblocking_pipe() {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  Pipe p{tcpkit::UniqueFd(fds[0]), tcpkit::UniqueFd(fds[1])};
  EXPECT_GE(::fcntl(p.writer.get(), F_SETPIPE_SZ, 4096), 4096);
  EXPECT_EQ(::fcntl(p.writer.get(), F_SETFL, O_NONBLOCK), 0);
  return p;
}

}  // namespace

TEST(WriteAll, WaitsForAFullNonBlockingPipeUntilItTakesEverything) {
  Pipe p = nonblocking_pipe();
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i % 23);
  std::string received;
  std::thread reader([&] {
    char buf[1024];
    while (received.size() < data.size()) {
      ssize_t n = ::read(p.reader.get(), buf, sizeof buf);
      if (n <= 0) break;
      received.append(buf, static_cast<size_t>(n));
    }
  });
  auto written = tcpkit::write_all(p.writer.get(), data, "pipe", 20s);
  reader.join();
  ASSERT_TRUE(written) << written.error().message();
  EXPECT_TRUE(received == data) << received.size() << " of " << data.size() << " bytes arrived";
}

TEST(WriteAll, GivesUpOnAFullPipeThatNobodyReadsWhenItsTimeIsUp) {
  Pipe p = nonblocking_pipe();
  auto written = tcpkit::write_all(p.writer.get(), std::string(64 * 1024, 'x'), "pipe", 50ms);
  ASSERT_FALSE(written);
  EXPECT_TRUE(written.error() == std::errc::timed_out) << written.error().message();
  EXPECT_NE(written.error().message().find("write to pipe"), std::string::npos)
      << written.error().message();
}

TEST(WriteAll, SaysThatTheReaderHasGone) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGPIPE, &ignore, &old), 0);
  Pipe p = nonblocking_pipe();
  p.reader.reset();
  auto written = tcpkit::write_all(p.writer.get(), "hello", "stdout");
  ::sigaction(SIGPIPE, &old, nullptr);
  ASSERT_FALSE(written);
  EXPECT_TRUE(written.error() == std::errc::broken_pipe) << written.error().message();
  EXPECT_NE(written.error().message().find("write to stdout"), std::string::npos)
      << written.error().message();
}

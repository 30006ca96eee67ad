// reconnecting_client: a client that survives a server that is not up yet,
// or that goes away in the middle. TcpClient retries failed connects and
// reconnects after a lost connection, waiting a little longer each time
// (capped exponential back-off with random jitter). Each attempt is printed.
//
//   usage: reconnecting_client HOST:PORT [COUNT] [MAX_ATTEMPTS]
//   e.g.   reconnecting_client 127.0.0.1:9000 3
//
// Sends "message 1" .. "message COUNT", one line each, to an echo server
// (`tcpkit serve --mode echo`), prints every reply line, and exits 0 once
// COUNT replies came back. A message whose reply was lost with the connection
// is sent again after the reconnect. After MAX_ATTEMPTS failed connects in a
// row (default 20) it gives up and exits 1.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tcpkit/buffer.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/tcp_client.h"
#include "tcpkit/tcp_connection.h"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: %s HOST:PORT [COUNT] [MAX_ATTEMPTS]\n", argv[0]);
    return 2;
  }
  const int count = argc > 2 ? std::atoi(argv[2]) : 3;
  const int max_attempts = argc > 3 ? std::atoi(argv[3]) : 20;
  auto targets = tcpkit::Endpoint::resolve(argv[1]);  // "localhost:9000", "[::1]:9000"
  if (!targets || count < 1 || max_attempts < 1) {
    if (!targets) std::fprintf(stderr, "%s\n", targets.error().message().c_str());
    std::fprintf(stderr, "usage: %s HOST:PORT [COUNT] [MAX_ATTEMPTS]\n", argv[0]);
    return 2;
  }

  tcpkit::EventLoop loop;
  tcpkit::ClientOptions options;
  options.retry = true;
  options.initial_backoff = 100ms;  // short, for a demo; the default is 500 ms
  options.max_backoff = 2s;
  tcpkit::TcpClient client(&loop, *targets, options);

  int attempt = 0;   // connect attempts since the last success
  int answered = 0;  // replies received; message answered+1 is the one in flight
  int exit_code = 0;
  const tcpkit::LineCodec codec;

  auto send_next = [&](const tcpkit::TcpConnectionPtr& conn) {
    tcpkit::Buffer out;
    // Refused only for a line holding '\n', which this one never does.
    if (!tcpkit::LineCodec::encode("message " + std::to_string(answered + 1), out)) return;
    conn->send(out);
  };

  client.set_on_connect_error([&](const tcpkit::Error& error, std::chrono::milliseconds retry_in) {
    ++attempt;
    std::printf("attempt %d failed: %s\n", attempt, error.message().c_str());
    std::fflush(stdout);
    if (attempt >= max_attempts || retry_in.count() < 0) {
      std::printf("giving up\n");
      exit_code = 1;
      client.stop();
      loop.quit();
    }
  });

  client.set_on_connection([&](const tcpkit::TcpConnectionPtr& conn) {
    if (conn->connected()) {
      std::printf("connected to %s after %d failed attempts\n",
                  conn->peer_endpoint().to_string().c_str(), attempt);
      attempt = 0;
      send_next(conn);  // again, if the last connection took its reply with it
    } else if (answered == count) {
      loop.quit();  // our own disconnect() finished: done
      return;
    } else {
      std::printf("connection lost (%s), reconnecting\n", conn->close_reason().message().c_str());
    }
    std::fflush(stdout);
  });

  client.set_on_message([&](const tcpkit::TcpConnectionPtr& conn, tcpkit::Buffer& in) {
    std::string line;
    while (answered < count && codec.decode(in, &line) == tcpkit::DecodeResult::frame) {
      ++answered;
      std::printf("reply %d: %s\n", answered, line.c_str());
      std::fflush(stdout);
      if (answered < count) send_next(conn);
    }
    if (answered == count) client.disconnect();  // FIN; the server closes, then we quit
  });

  client.connect();
  loop.run();
  return exit_code;
}

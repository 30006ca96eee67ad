// server_loop: the tutorial's "tcp伺服器如何迴圈接收乙個客戶端訊息?" (how does a
// server keep receiving from one client?) and "recv返回值的含義" (what recv's
// return value means): reply to every message until recv() returns 0 bytes,
// which means the client closed the connection.
//
//   usage: server_loop [PORT] [CLIENTS]
//   PORT 0 (the default) lets the kernel choose; the bound address is printed.
//   CLIENTS: serve that many clients one after another (default 1), then exit.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tcpkit/tcp_listener.h"

int main(int argc, char** argv) {
  auto port = tcpkit::Endpoint::parse_port(argc > 1 ? argv[1] : "0");
  const int clients = argc > 2 ? std::atoi(argv[2]) : 1;
  if (!port || clients < 1) {
    std::fprintf(stderr, "usage: %s [PORT] [CLIENTS]\n", argv[0]);
    return 2;
  }

  // Steps 1-3: socket, bind, listen (see tcp_server.cpp).
  auto listener = tcpkit::TcpListener::bind(tcpkit::Endpoint::loopback_v4(*port));
  if (!listener) {
    std::fprintf(stderr, "%s\n", listener.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", listener->local_endpoint().to_string().c_str());
  std::fflush(stdout);

  for (int served = 0; served < clients; ++served) {
    // Step 4: wait for a client. While this one is served, others wait in the
    // listen queue; server_threads.cpp serves them at the same time.
    auto client = listener->accept();
    if (!client) {
      std::fprintf(stderr, "%s\n", client.error().message().c_str());
      return 1;
    }
    const std::string who = client->peer.to_string();

    // Step 5 in a loop, "while true": receive, print, reply.
    char buf[1024];
    for (;;) {
      auto n = client->stream.recv(buf, sizeof buf);
      if (!n) {
        std::fprintf(stderr, "%s\n", n.error().message().c_str());
        break;
      }
      // "如果客戶端先斷開了tcp連線,那麼recv()將會解阻塞,接收到乙個0位元組資料":
      // when the client closes first, recv() returns 0 bytes. Without this
      // check the loop would spin forever on an empty read.
      if (*n == 0) {
        std::printf("client %s closed the connection\n", who.c_str());
        std::fflush(stdout);
        break;
      }
      std::printf("message from %s: %s\n", who.c_str(), std::string(buf, *n).c_str());
      std::fflush(stdout);
      if (auto sent = client->stream.send_all("收到了你的訊息"); !sent) {
        std::fprintf(stderr, "%s\n", sent.error().message().c_str());
        break;
      }
    }
    // Step 6: the client's socket closes as `client` goes out of scope.
  }
  // Step 7: the listener closes when main returns.
  return 0;
}

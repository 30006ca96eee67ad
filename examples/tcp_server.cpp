// tcp_server: the tutorial's TCP server (section 6, "tcp服務端"), one library
// call per step: accept one client, receive one message, reply, close.
//
//   usage: tcp_server [PORT] [CLIENTS]
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

  // Step 1, "建立tcp服務端套接字" (create the server socket), step 2, "繫結埠"
  // (bind the port), and step 3, "設定套接字物件為被動監聽狀態" (listen), are one
  // call. SO_REUSEADDR is on by default, so a restart never meets the
  // tutorial's "Address already in use" (section 7). Loopback only, so a
  // learning example is not reachable from the network; use
  // Endpoint::any_v4(port) to serve other machines.
  auto listener = tcpkit::TcpListener::bind(tcpkit::Endpoint::loopback_v4(*port));
  if (!listener) {
    std::fprintf(stderr, "%s\n", listener.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", listener->local_endpoint().to_string().c_str());
  std::fflush(stdout);

  for (int served = 0; served < clients; ++served) {
    // Step 4, "阻塞等待接收客戶端的連線" (block until a client connects).
    auto client = listener->accept();
    if (!client) {
      std::fprintf(stderr, "%s\n", client.error().message().c_str());
      return 1;
    }

    // Step 5, "收發資料" (receive and send): one message, one reply.
    char buf[1024];
    auto n = client->stream.recv(buf, sizeof buf);
    if (!n) {
      std::fprintf(stderr, "%s\n", n.error().message().c_str());
      continue;
    }
    std::printf("message from %s: %s\n", client->peer.to_string().c_str(),
                std::string(buf, *n).c_str());
    std::fflush(stdout);
    if (auto sent = client->stream.send_all("收到了你的訊息"); !sent) {
      std::fprintf(stderr, "%s\n", sent.error().message().c_str());
    }

    // Step 6, "關閉新建立出來的套接字" (close the client's socket): the
    // accepted stream closes when `client` goes out of scope here.
  }
  // Step 7, "關閉tcp服務端套接字" (close the server socket): the listener
  // closes when main returns.
  return 0;
}

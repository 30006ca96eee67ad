// server_threads: the tutorial's "tcp伺服器如何迴圈為多個客戶端提供服務?" (how does a
// server serve many clients?): one thread per client, so a slow client never
// keeps the others waiting. Each thread runs server_loop.cpp's loop.
//
//   usage: server_threads [PORT] [CLIENTS]
//   PORT 0 (the default) lets the kernel choose; the bound address is printed.
//   CLIENTS: exit after that many clients have come and gone (default 0: never).
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "tcpkit/tcp_listener.h"

namespace {

std::mutex mutex;
std::condition_variable all_done;
int active = 0;  // client threads still running, guarded by `mutex`

// Step 5 for one client, on its own thread: reply until recv() returns 0.
void serve(tcpkit::Accepted client) {
  const std::string who = client.peer.to_string();
  char buf[1024];
  for (;;) {
    auto n = client.stream.recv(buf, sizeof buf);
    if (!n) std::fprintf(stderr, "%s\n", n.error().message().c_str());
    if (!n || *n == 0) break;
    std::printf("message from %s: %s\n", who.c_str(), std::string(buf, *n).c_str());
    std::fflush(stdout);
    if (!client.stream.send_all("收到了你的訊息")) break;
  }
  std::printf("client %s closed the connection\n", who.c_str());
  std::fflush(stdout);
  // Close before reporting done, so main never exits while a socket is open.
  client.stream.close();
  std::lock_guard lock(mutex);
  if (--active == 0) all_done.notify_all();
}

}  // namespace

int main(int argc, char** argv) {
  auto port = tcpkit::Endpoint::parse_port(argc > 1 ? argv[1] : "0");
  const int clients = argc > 2 ? std::atoi(argv[2]) : 0;
  if (!port || clients < 0) {
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

  // Step 4 in a loop: the main thread only accepts; each client gets a thread.
  for (int accepted = 0; clients == 0 || accepted < clients; ++accepted) {
    auto client = listener->accept();
    if (!client) {
      std::fprintf(stderr, "%s\n", client.error().message().c_str());
      continue;
    }
    std::lock_guard lock(mutex);
    ++active;
    // Detached: the thread owns its client and ends on its own; `active` tells
    // main when the last one is done.
    std::thread(serve, std::move(*client)).detach();
  }
  // Step 7: stop accepting, then wait for the clients still being served.
  *listener = tcpkit::TcpListener();
  std::unique_lock lock(mutex);
  all_done.wait(lock, [] { return active == 0; });
  return 0;
}

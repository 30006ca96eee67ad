// coro_echo_server: the tutorial's server loop — accept, then recv and send
// until recv returns 0 — written as coroutines, so that one thread serves
// ten thousand clients at once. Each client gets a task that reads like the
// blocking loop; the event loop runs them all.
//
//   usage: coro_echo_server PORT
//   PORT 0 lets the kernel choose; the bound address is printed.
//
// Echoes every byte back. A slow reader holds up only its own task:
// write_all() waits while that connection's output is over its high-water
// mark, and the task reads nothing meanwhile.
#include <cstdio>

#include "tcpkit/coro.h"
#include "tcpkit/tcp_server.h"

using namespace tcpkit;
using namespace tcpkit::coro;

namespace {

// One client: "while true: data = recv(); if not data: break; send(data)".
Task<> echo(Stream client) {
  Buffer data;
  for (;;) {
    auto n = co_await client.read_some(data);
    if (!n || *n == 0) co_return;  // an error, or the client closed: recv() returned 0
    if (!co_await client.write_all(data)) co_return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto port = Endpoint::parse_port(argc == 2 ? argv[1] : "");
  if (!port) {
    std::fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  EventLoop loop;
  TcpServer server(&loop);
  coro::Acceptor acceptor(server);
  if (auto listening = server.listen(Endpoint::loopback_v4(*port)); !listening) {
    std::fprintf(stderr, "%s\n", listening.error().message().c_str());
    return 1;
  }
  if (auto started = server.start(); !started) {
    std::fprintf(stderr, "%s\n", started.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", server.listen_endpoints().at(0).to_string().c_str());
  std::fflush(stdout);
  spawn(&loop, serve(acceptor, echo));
  loop.run();
  return 0;
}

// coro_tutorial_server: the tutorial's server (section 6), line for line as
// its Python reads, with co_await where Python blocks — and, unlike the
// Python, every client served at once on one thread.
//
//   usage: coro_tutorial_server [PORT]
//
// Python:                                          here:
//   tcp_server_socket = socket.socket(...)           TcpServer server(&loop)
//   tcp_server_socket.setsockopt(SO_REUSEADDR, 1)    (listen() always sets it)
//   tcp_server_socket.bind(("", 8888))               server.listen(...)
//   tcp_server_socket.listen(128)                    server.start()
//   new_socket, addr = tcp_server_socket.accept()    co_await acceptor.accept()
//   recv_data = new_socket.recv(1024)                co_await conn.read_some(...)
//   if not recv_data: break                          if (*n == 0) break
//   new_socket.send("收到了你的訊息".encode())         co_await conn.write_all(...)
//   new_socket.close()                               conn goes out of scope
#include <cstdio>
#include <string>

#include "tcpkit/coro.h"
#include "tcpkit/tcp_server.h"

using namespace tcpkit;
using namespace tcpkit::coro;

namespace {

// Step 5, "收發資料" (receive and send), in the tutorial's "while true".
Task<> talk(Stream new_socket) {
  const std::string addr = new_socket.peer_endpoint().to_string();
  for (;;) {
    char recv_data[1024];
    auto n = co_await new_socket.read_some(recv_data);
    if (!n) {
      std::printf("%s: %s\n", addr.c_str(), n.error().message().c_str());
      break;
    }
    // "如果客戶端先斷開了tcp連線,那麼recv()將會解阻塞,接收到乙個0位元組資料"
    if (*n == 0) {
      std::printf("client %s closed the connection\n", addr.c_str());
      break;
    }
    std::printf("接收到來自%s的訊息:%s\n", addr.c_str(), std::string(recv_data, *n).c_str());
    std::fflush(stdout);
    if (!co_await new_socket.write_all("收到了你的訊息")) break;
  }
  std::fflush(stdout);
  // Step 6, "關閉新建立出來的套接字": new_socket closes as the task ends.
}

// Step 4, "阻塞等待接收客戶端的連線", for ever: a task per client.
Task<> accept_loop(coro::Acceptor& tcp_server_socket) {
  for (;;) {
    auto new_socket = co_await tcp_server_socket.accept();
    if (!new_socket) co_return;
    EventLoop* loop = new_socket->loop();
    spawn(loop, talk(std::move(*new_socket)));
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto port = Endpoint::parse_port(argc > 1 ? argv[1] : "0");
  if (!port) {
    std::fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
    return 2;
  }
  EventLoop loop;
  // Steps 1-3: socket, bind (SO_REUSEADDR on), listen.
  TcpServer server(&loop);
  coro::Acceptor tcp_server_socket(server);
  if (auto r = server.listen(Endpoint::loopback_v4(*port)); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", server.listen_endpoints().at(0).to_string().c_str());
  std::fflush(stdout);
  spawn(&loop, accept_loop(tcp_server_socket));
  loop.run();
  // Step 7, "關閉tcp服務端套接字": the server closes as main returns.
  return 0;
}

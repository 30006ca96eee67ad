// coro_tutorial_client: the tutorial's client (section 5), line for line as
// its Python reads, with co_await where Python blocks.
//
//   usage: coro_tutorial_client HOST PORT MESSAGE
//
// Python:                                          here:
//   tcp_client_socket = socket.socket(...)           (connect() makes it)
//   tcp_client_socket.connect((ip, port))            co_await connect(...)
//   tcp_client_socket.send(message.encode())         co_await s.write_all(...)
//   recv_data = tcp_client_socket.recv(1024)         co_await s.read_some(...)
//   print(recv_data.decode())                        std::printf(...)
//   tcp_client_socket.close()                        s goes out of scope
#include <chrono>
#include <cstdio>
#include <string>

#include "tcpkit/coro.h"

using namespace std::chrono_literals;
using namespace tcpkit;
using namespace tcpkit::coro;

namespace {

Task<> client(EventLoop* loop, std::vector<Endpoint> addresses, std::string message, int* status) {
  // Steps 1 and 2: create the socket and connect (each address in turn).
  ClientOptions options;
  options.connect_timeout = 5s;
  Result<Stream> tcp_client_socket = Error();
  for (const auto& address : addresses) {
    tcp_client_socket = co_await connect(address, options);
    if (tcp_client_socket) break;
  }
  if (!tcp_client_socket) {
    std::fprintf(stderr, "%s\n", tcp_client_socket.error().message().c_str());
    loop->quit();
    co_return;
  }
  // Step 3.1, "傳送資料".
  if (auto sent = co_await tcp_client_socket->write_all(message); !sent) {
    std::fprintf(stderr, "%s\n", sent.error().message().c_str());
    loop->quit();
    co_return;
  }
  // Step 3.2, "接收資料": up to 1024 bytes, within 5 s.
  char recv_data[1024];
  auto n = co_await timeout(5s, tcp_client_socket->read_some(recv_data));
  if (!n) {
    std::fprintf(stderr, "%s\n", n.error().message().c_str());
  } else {
    std::printf("received from %s: %s\n", tcp_client_socket->peer_endpoint().to_string().c_str(),
                std::string(recv_data, *n).c_str());
    *status = 0;
  }
  // Step 4, "關閉tcp套接字": the stream closes as the task ends.
  loop->quit();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s HOST PORT MESSAGE\n", argv[0]);
    return 2;
  }
  auto port = Endpoint::parse_port(argv[2]);
  if (!port) {
    std::fprintf(stderr, "%s\n", port.error().message().c_str());
    return 2;
  }
  auto addresses = Endpoint::resolve(argv[1], *port);
  if (!addresses) {
    std::fprintf(stderr, "%s\n", addresses.error().message().c_str());
    return 1;
  }
  EventLoop loop;
  int status = 1;
  spawn(&loop, client(&loop, *addresses, argv[3], &status));
  loop.run();
  return status;
}

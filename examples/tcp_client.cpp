// tcp_client: the tutorial's TCP client (section 5, "tcp客戶端程式的開發流程"),
// one library call per step.
//
//   usage: tcp_client HOST PORT MESSAGE
//   e.g.   tcp_client 127.0.0.1 8888 hello
//
// Connects, sends MESSAGE, prints the server's reply (what arrives until the
// server closes or is quiet for 0.3 s) and closes.
#include <cstdio>
#include <string>

#include "tcpkit/endpoint.h"
#include "tcpkit/tcp_stream.h"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s HOST PORT MESSAGE\n", argv[0]);
    return 2;
  }
  auto port = tcpkit::Endpoint::parse_port(argv[2]);
  if (!port) {
    std::fprintf(stderr, "%s\n", port.error().message().c_str());
    return 2;
  }
  auto addresses = tcpkit::Endpoint::resolve(argv[1], *port);
  if (!addresses) {
    std::fprintf(stderr, "%s\n", addresses.error().message().c_str());
    return 1;
  }

  // Step 1, "建立tcp套接字" (create the TCP socket), and step 2, "跟伺服器建立鏈結"
  // (connect to the server), are one call: a TcpStream is always connected.
  // A name may have several addresses (IPv6 and IPv4); try each in turn.
  tcpkit::Result<tcpkit::TcpStream> stream = tcpkit::Error();
  for (const auto& address : *addresses) {
    stream = tcpkit::TcpStream::connect(address, 5s);
    if (stream) break;
  }
  if (!stream) {
    std::fprintf(stderr, "%s\n", stream.error().message().c_str());
    return 1;
  }

  // Step 3.1, "傳送資料" (send data). send_all loops until every byte is out.
  if (auto sent = stream->send_all(argv[3]); !sent) {
    std::fprintf(stderr, "%s\n", sent.error().message().c_str());
    return 1;
  }

  // Step 3.2, "接收資料" (receive data), like the tutorial's recv(1024). The
  // network may split a reply, so keep reading while more follows; stop when
  // the server closes (recv() returns 0, section 7 of the tutorial) or has
  // been quiet for 0.3 s. A server that replies and closes, like tcp_server,
  // thus closes first, and the TIME_WAIT stays on its end (section 9).
  if (auto r = stream->set_recv_timeout(5s); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  std::string reply;
  char chunk[1024];
  do {
    auto n = stream->recv(chunk, sizeof chunk);
    if (!n) {
      std::fprintf(stderr, "%s\n", n.error().message().c_str());
      return 1;
    }
    if (*n == 0) break;  // the server closed its end
    reply.append(chunk, *n);
  } while (stream->wait_readable(300) > 0);
  std::printf("received from %s: %s\n", stream->peer_endpoint().to_string().c_str(), reply.c_str());

  // Step 4, "關閉tcp套接字" (close the socket): the destructor closes it; the
  // explicit call only shows where the step happens.
  stream->close();
  return 0;
}

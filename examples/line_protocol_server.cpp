// line_protocol_server: a tiny request/reply protocol over TCP, to show why
// a real protocol needs framing. TCP is a byte stream: one send() may arrive
// in two recv()s and two send()s in one, so "each read is a message" (the
// tutorial's server) breaks as soon as the network splits or merges data.
// A codec cuts the stream into messages wherever the reads happen to end.
//
//   usage: line_protocol_server [PORT] [line|length]
//   PORT 0 (the default) lets the kernel choose; the bound address is printed.
//   line (default): one request per "\n"-ended line (try `tcpkit connect --line`).
//   length: each request is a 4-byte big-endian length, then that many bytes.
//
// Requests and their replies:
//   PING        -> PONG
//   ECHO text   -> text
//   UPPER text  -> TEXT
//   LEN text    -> the length of text in bytes
//   QUIT        -> BYE, then the server closes the connection
//   anything else -> ERR unknown command 'WORD'
#include <cctype>
#include <cstdio>
#include <string>

#include "tcpkit/buffer.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/length_prefix_codec.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tcp_server.h"

namespace {

// The reply to one request, and whether to close afterwards.
std::string answer(const std::string& request, bool* quit) {
  const auto space = request.find(' ');
  const std::string word = request.substr(0, space);
  const std::string arg = space == std::string::npos ? "" : request.substr(space + 1);
  if (word == "PING") return "PONG";
  if (word == "ECHO") return arg;
  if (word == "LEN") return std::to_string(arg.size());
  if (word == "UPPER") {
    std::string upper = arg;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return upper;
  }
  if (word == "QUIT") {
    *quit = true;
    return "BYE";
  }
  return "ERR unknown command '" + word + "'";
}

// Both codecs have the same shape (decode into a string, static encode), so
// one template serves either framing.
template <typename Codec>
void use_codec(tcpkit::TcpServer& server, Codec codec) {
  server.set_on_message([codec](const tcpkit::TcpConnectionPtr& conn, tcpkit::Buffer& in) {
    std::string request;
    for (;;) {
      auto result = codec.decode(in, &request);
      if (result == tcpkit::DecodeResult::need_more) return;  // wait for the rest
      if (result == tcpkit::DecodeResult::too_large) {
        conn->force_close(codec.too_large_error().code());
        return;
      }
      bool quit = false;
      tcpkit::Buffer reply;
      // Each codec refuses what it cannot frame (a line holding '\n', a
      // frame of 4 GiB); an answer is neither, since a request line cannot
      // hold a '\n' and answers are short.
      static_cast<void>(Codec::encode(answer(request, &quit), reply));
      conn->send(reply);
      if (quit) {
        conn->shutdown();  // FIN once "BYE" is out; nothing queued is lost
        in.retrieve_all();
        return;
      }
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  auto port = tcpkit::Endpoint::parse_port(argc > 1 ? argv[1] : "0");
  const std::string framing = argc > 2 ? argv[2] : "line";
  if (!port || (framing != "line" && framing != "length")) {
    std::fprintf(stderr, "usage: %s [PORT] [line|length]\n", argv[0]);
    return 2;
  }

  tcpkit::EventLoop loop;
  tcpkit::TcpServer server(&loop);
  if (framing == "line") {
    use_codec(server, tcpkit::LineCodec(4096));
  } else {
    use_codec(server, tcpkit::LengthPrefixCodec(64 * 1024));
  }
  if (auto r = server.listen(tcpkit::Endpoint::loopback_v4(*port)); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s (%s framing)\n",
              server.listen_endpoints().front().to_string().c_str(), framing.c_str());
  std::fflush(stdout);
  loop.run();  // until the process is stopped (Ctrl-C)
  return 0;
}

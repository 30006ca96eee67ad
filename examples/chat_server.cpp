// chat_server: many clients at once on one thread, with the reactor instead
// of one thread per client (compare server_threads.cpp). Every line a client
// sends goes to every other client, prefixed with the sender's address; a
// minimal `tcpkit serve --mode chat`.
//
//   usage: chat_server [PORT]
//   PORT 0 (the default) lets the kernel choose; the bound address is printed.
//   Try it with two terminals running `tcpkit connect 127.0.0.1 PORT`.
//
// TCP delivers a byte stream, not messages, so the server cuts the stream into
// lines with LineCodec: a line split over two reads, or two lines in one read,
// still reach the others as whole lines.
#include <cstdio>
#include <set>
#include <string>

#include "tcpkit/buffer.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tcp_server.h"

namespace {

// The members of the room. Only the loop thread touches it: with
// ServerOptions::threads = 0 every callback runs on the base loop.
std::set<tcpkit::TcpConnectionPtr> members;

// Sends `line` to every member except `from` (null: to everybody). A line
// holding '\n' would be two lines to them: encode() refuses it.
void broadcast(const tcpkit::TcpConnection* from, const std::string& line) {
  for (const auto& member : members) {
    if (member.get() == from) continue;
    tcpkit::Buffer out;
    if (auto encoded = tcpkit::LineCodec::encode(line, out); !encoded) {
      std::fprintf(stderr, "not sent: %s\n", encoded.error().message().c_str());
      return;
    }
    member->send(out);
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto port = tcpkit::Endpoint::parse_port(argc > 1 ? argv[1] : "0");
  if (!port) {
    std::fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
    return 2;
  }

  tcpkit::EventLoop loop;
  tcpkit::TcpServer server(&loop);
  const tcpkit::LineCodec codec(1024);  // a chat line longer than 1 KiB is abuse

  server.set_on_connection([](const tcpkit::TcpConnectionPtr& conn) {
    const std::string who = conn->peer_endpoint().to_string();
    if (conn->connected()) {
      members.insert(conn);
      std::printf("%s joined (%zu online)\n", who.c_str(), members.size());
      conn->send("welcome " + who + ", " + std::to_string(members.size()) + " online\n");
      broadcast(conn.get(), "* " + who + " joined");
    } else {
      // Down: the peer closed (recv() returned 0), reset, or was too chatty.
      members.erase(conn);
      std::printf("%s left: %s (%zu online)\n", who.c_str(), conn->close_reason().message().c_str(),
                  members.size());
      broadcast(nullptr, "* " + who + " left");
    }
    std::fflush(stdout);
  });

  server.set_on_message([&codec](const tcpkit::TcpConnectionPtr& conn, tcpkit::Buffer& in) {
    std::string line;
    for (;;) {
      auto result = codec.decode(in, &line);
      if (result == tcpkit::DecodeResult::need_more) return;  // the rest comes with a later read
      if (result == tcpkit::DecodeResult::too_large) {
        conn->force_close(codec.too_large_error().code());
        return;
      }
      broadcast(conn.get(), conn->peer_endpoint().to_string() + ": " + line);
    }
  });

  if (auto r = server.listen(tcpkit::Endpoint::loopback_v4(*port)); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", server.listen_endpoints().front().to_string().c_str());
  std::fflush(stdout);
  loop.run();  // until the process is stopped (Ctrl-C)
  return 0;
}

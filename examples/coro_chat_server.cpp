// coro_chat_server: chat_server.cpp written as coroutines. Each client is a
// task that reads lines in a plain loop — "while a line comes: tell the
// others" — and every client shares one thread. Same protocol as
// chat_server: a welcome, "* who joined/left", and "who: line" to the others.
//
//   usage: coro_chat_server [PORT]
//   Try it with two terminals running `tcpkit connect 127.0.0.1 PORT`.
//
// A member's task reads only its own client. Lines for the others go through
// their connections' send(), which never waits: a member that stops reading
// is dropped once its backlog passes the high-water mark (OverflowPolicy::
// close), so one slow reader cannot hold up the room.
#include <cstdio>
#include <set>
#include <string>

#include "tcpkit/coro.h"
#include "tcpkit/tcp_server.h"

using namespace tcpkit;
using namespace tcpkit::coro;

namespace {

// The members of the room; only the loop thread touches it.
std::set<TcpConnectionPtr> members;

// A line holding '\n' would be two lines to the others: encode() refuses it.
void broadcast(const TcpConnection* from, const std::string& line) {
  for (const auto& member : members) {
    if (member.get() == from) continue;
    Buffer out;
    if (auto encoded = LineCodec::encode(line, out); !encoded) {
      std::fprintf(stderr, "not sent: %s\n", encoded.error().message().c_str());
      return;
    }
    member->send(out);
  }
}

Task<> member(Stream client) {
  const LineCodec codec(1024);  // a chat line longer than 1 KiB is abuse
  const std::string who = client.peer_endpoint().to_string();
  members.insert(client.connection());
  std::printf("%s joined (%zu online)\n", who.c_str(), members.size());
  std::fflush(stdout);
  (void)co_await client.write_line("welcome " + who + ", " + std::to_string(members.size()) +
                                   " online");
  broadcast(client.connection().get(), "* " + who + " joined");

  std::string why = "end of stream";
  for (;;) {
    auto line = co_await client.read_line(codec);
    if (!line) {
      why = line.error().message();  // reset, or a line over the limit
      break;
    }
    if (!*line) break;  // the client closed: recv() returned 0
    broadcast(client.connection().get(), who + ": " + **line);
  }
  members.erase(client.connection());
  std::printf("%s left: %s (%zu online)\n", who.c_str(), why.c_str(), members.size());
  std::fflush(stdout);
  broadcast(nullptr, "* " + who + " left");
  client.close();
}

}  // namespace

int main(int argc, char** argv) {
  auto port = Endpoint::parse_port(argc > 1 ? argv[1] : "0");
  if (!port) {
    std::fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
    return 2;
  }
  EventLoop loop;
  ServerOptions options;
  options.connection.high_water_mark = 1024 * 1024;
  options.connection.overflow = OverflowPolicy::close;
  TcpServer server(&loop, options);
  coro::Acceptor acceptor(server);
  if (auto r = server.listen(Endpoint::loopback_v4(*port)); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", server.listen_endpoints().front().to_string().c_str());
  std::fflush(stdout);
  spawn(&loop, serve(acceptor, member));
  loop.run();  // until the process is stopped (Ctrl-C)
  return 0;
}

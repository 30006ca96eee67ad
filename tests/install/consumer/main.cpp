// Parses an endpoint with the installed library and prints it back, so the
// install test can check headers, the package config and linking in one run.
#include <cstdio>

#include "tcpkit/endpoint.h"
#include "tcpkit/tcp_stream.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s HOST:PORT\n", argv[0]);
    return 2;
  }
  auto endpoint = tcpkit::Endpoint::parse(argv[1]);
  if (!endpoint) {
    std::fprintf(stderr, "%s\n", endpoint.error().message().c_str());
    return 1;
  }
  std::printf("%s %s port %u\n", endpoint->to_string().c_str(), endpoint->is_v6() ? "ipv6" : "ipv4",
              static_cast<unsigned>(endpoint->port()));
  // Its destructor calls UniqueFd::reset from unique_fd.cpp: a second object
  // file of the library must link too.
  tcpkit::TcpStream unconnected;
  return unconnected.is_open() ? 1 : 0;
}

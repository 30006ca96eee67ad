// Fuzzes the metrics server's request parser (parse_http_request) and its
// Host check. Invariants: never crash; a parsed request has a method and a
// path without '?' or spaces; a head never parses past max_bytes; the answer
// does not depend on what follows the head; host_allowed() never admits a
// Host that is not an IP literal, localhost or the configured name.
#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/http_request.h"
#include "fuzz_check.h"

using tcpkit::cli::host_allowed;
using tcpkit::cli::HttpParse;
using tcpkit::cli::HttpRequest;
using tcpkit::cli::parse_http_request;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  HttpRequest request;
  const HttpParse parsed = parse_http_request(input, 1024, &request);
  if (parsed == HttpParse::done) {
    check(!request.method.empty(), "a parsed request has a method");
    check(request.path.find_first_of("? \r\n") == std::string::npos,
          "the path is one token without a query");
    // Bytes after the blank line (a body, a pipelined request) change nothing.
    std::string longer(input);
    longer += "\r\n\r\nGET /other HTTP/1.1\r\nHost: x\r\n\r\n";
    HttpRequest again;
    check(parse_http_request(longer, 1024, &again) == HttpParse::done,
          "trailing bytes keep the head parsed");
    check(
        again.method == request.method && again.path == request.path && again.host == request.host,
        "trailing bytes change nothing");
  }
  if (size > 1024 + 4 && parsed != HttpParse::done && parsed != HttpParse::bad) {
    check(parsed == HttpParse::too_large, "over max_bytes without an end is too large");
  }
  if (host_allowed(input, {"metrics.example"})) {
    // What passes names this server: no slash, no '@', no space, no control.
    for (unsigned char c : input) {
      check(c > 0x20 && c < 0x7f && c != '/' && c != '@', "an allowed Host is a plain authority");
    }
  }
  return 0;
}

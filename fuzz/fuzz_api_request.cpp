// Fuzzes the HTTP request parser (tools/tcpkit/common/http_request.cpp) as the
// chaos API calls it, with a body limit, and the Host check. Invariants: never crash; a parsed
// request took no more than it was given, within the limits; the bytes it took parse again to the
// same request (what follows it cannot change it); a path starts with
// '/' and has no query.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/http_request.h"
#include "fuzz_check.h"

using tcpkit::cli::HttpParse;
using tcpkit::cli::HttpRequest;
using tcpkit::cli::parse_http_request;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr size_t kHead = 512, kBody = 256;
  HttpRequest request;
  HttpParse parsed = parse_http_request(input, kHead, &request, kBody);
  (void)tcpkit::cli::host_allowed(input.substr(0, 64), {});
  if (parsed != HttpParse::done) return 0;
  check(request.size <= input.size(), "took more than the input");
  check(request.body.size() <= kBody, "body over its limit");
  check(request.size - request.body.size() <= kHead, "head over its limit");
  check(!request.path.empty() && request.path[0] == '/', "path without '/'");
  check(request.path.find('?') == std::string::npos, "query left in the path");
  HttpRequest again;
  check(parse_http_request(input.substr(0, request.size), kHead, &again, kBody) == HttpParse::done,
        "the request's own bytes do not parse");
  check(again.method == request.method && again.path == request.path &&
            again.host == request.host && again.body == request.body && again.size == request.size,
        "the request's own bytes parse differently");
  return 0;
}

// Fuzzes the chaos API's request parser (tools/tcpkit/common/http_request.cpp) and
// its Host check. Invariants: never crash; a parsed request took no more
// than it was given, within the limits; the bytes it took parse again to
// the same request (what follows it cannot change it); a path starts with
// '/' and has no query.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "relay/api_request.h"

using tcpkit::cli::ApiParse;
using tcpkit::cli::ApiRequest;
using tcpkit::cli::parse_api_request;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr size_t kHead = 512, kBody = 256;
  ApiRequest request;
  ApiParse parsed = parse_api_request(input, kHead, kBody, &request);
  (void)tcpkit::cli::host_is_safe(input.substr(0, 64));
  if (parsed != ApiParse::done) return 0;
  check(request.size <= input.size(), "took more than the input");
  check(request.body.size() <= kBody, "body over its limit");
  check(request.size - request.body.size() <= kHead, "head over its limit");
  check(!request.path.empty() && request.path[0] == '/', "path without '/'");
  check(request.path.find('?') == std::string::npos, "query left in the path");
  ApiRequest again;
  check(parse_api_request(input.substr(0, request.size), kHead, kBody, &again) == ApiParse::done,
        "the request's own bytes do not parse");
  check(again.method == request.method && again.path == request.path &&
            again.host == request.host && again.body == request.body && again.size == request.size,
        "the request's own bytes parse differently");
  return 0;
}

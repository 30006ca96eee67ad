// ApiRequest: one HTTP/1.1 request to `tcpkit relay --api`, parsed from
// bytes that anyone on the network may have sent (DESIGN decision 10).
//
// A pure function over the bytes received so far, so the API server can
// call it on every read and a fuzz target can call it on anything. Limits
// are the caller's: the head must end within max_head bytes and the body
// (Content-Length only; chunked bodies are refused, as toxiproxy's clients
// never send them) must fit in max_body, or the answer is too_large before
// more is buffered. The method and target are tokens of visible ASCII,
// header names are case-insensitive, and a request with two different
// Content-Length values is malformed (request smuggling).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tcpkit::cli {

struct ApiRequest {
  std::string method;
  std::string path;  // without the query string
  std::string host;  // the Host header as sent ("" when missing)
  std::string body;
  size_t size = 0;  // head plus body: what the request took from the input
};

enum class ApiParse { need_more, done, bad, too_large };

ApiParse parse_api_request(std::string_view data, size_t max_head, size_t max_body,
                           ApiRequest* out);

// True when `host` (a Host header) names this machine's loopback or a
// numeric address: a browser tricked by DNS rebinding sends the attacker's
// name instead, and must not drive the API. Port, brackets and case are
// ignored.
bool host_is_safe(std::string_view host);

}  // namespace tcpkit::cli

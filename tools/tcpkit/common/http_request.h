// One HTTP/1.1 request, as the program's two small HTTP servers read it
// (`serve --metrics` and `relay --api`), and the Host check that keeps
// their pages and API from other sites.
//
// Only as much HTTP as one request per connection needs: the request line,
// the Host field, a Content-Length body, the blank line. Bytes from anyone
// on the network (DESIGN decision 10): a pure function over the bytes
// received so far, so a server calls it on every read and a fuzz target on
// anything. Plain functions on values; any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tcpkit::cli {

// One parsed request head.
struct HttpRequest {
  std::string method;
  std::string path;                 // origin-form: starts with '/', without the query string
  std::optional<std::string> host;  // the Host field, trimmed; nullopt when absent
  std::string body;                 // the Content-Length bytes after the head
  size_t size = 0;                  // head plus body: what the request took from the input
};

// too_large: the head is over its limit (HTTP 431); body_too_large: the
// Content-Length is (413).
enum class HttpParse { need_more, done, bad, too_large, body_too_large };

// Parses the request at the front of `data`: its head (request line, field
// lines, blank line) within `max_head` bytes, then a body of Content-Length
// bytes within `max_body` (`body_too_large` before more is buffered). Fields other
// than Host and Content-Length are read past. `bad`: a request line that is
// not METHOD SP /target SP HTTP/d.d, a field line without a name and a
// colon, two Host fields (RFC 9112 section 3.2), two different
// Content-Length values or any Transfer-Encoding (request smuggling: the
// servers take no chunked bodies).
HttpParse parse_http_request(std::string_view data, size_t max_head, HttpRequest* out,
                             size_t max_body = 0);

// Whether a browser could have sent `host` only to this server. DNS
// rebinding points an attacker's name at 127.0.0.1, and the browser then
// treats a loopback status page as that site's own; what gives it away is
// the Host field, which names the attacker's domain. Accepted: an IP literal
// (with or without a port: a browser sends one only for a page it was given
// by address), "localhost", and the names in `names` (the host of --metrics
// when it is a name). Compared case-insensitively, a trailing dot ignored.
bool host_allowed(std::string_view host, const std::vector<std::string>& names);

// A path segment with its %XX escapes decoded (RFC 3986 section 2.1), as a
// router does before it compares names: "a%20b" is "a b", "x%2Fy" is "x/y".
// nullopt when a '%' is not followed by two hex digits.
std::optional<std::string> percent_decode(std::string_view text);

// The reason phrase of a status the program answers with ("Not Found").
const char* http_reason_phrase(int status);

}  // namespace tcpkit::cli

// The HTTP/1.1 request head that `serve --metrics` reads, and the Host check
// that keeps its pages from other sites.
//
// Only as much HTTP as one GET per connection needs: the request line, the
// Host field, the blank line. Plain functions on values; any thread.
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
  std::string path;                 // without the query string
  std::optional<std::string> host;  // the Host field, trimmed; nullopt when absent
};

enum class HttpParse { need_more, done, bad, too_large };

// Parses the head at the front of `data` (request line, headers, blank
// line), at most `max_bytes` of it. Fields other than Host are read past;
// two Host fields, or a field line without a name and a colon, are `bad`
// (RFC 9112 section 3.2: a server answers 400 to more than one Host).
HttpParse parse_http_request(std::string_view data, size_t max_bytes, HttpRequest* out);

// Whether a browser could have sent `host` only to this server. DNS
// rebinding points an attacker's name at 127.0.0.1, and the browser then
// treats a loopback status page as that site's own; what gives it away is
// the Host field, which names the attacker's domain. Accepted: an IP literal
// (with or without a port: a browser sends one only for a page it was given
// by address), "localhost", and the names in `names` (the host of --metrics
// when it is a name). Compared case-insensitively, a trailing dot ignored.
bool host_allowed(std::string_view host, const std::vector<std::string>& names);

}  // namespace tcpkit::cli

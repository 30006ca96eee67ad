#include "common/http_request.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>

namespace tcpkit::cli {
namespace {

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// "HTTP/1.1": the name, a digit, a dot, a digit (RFC 9112 section 2.3).
bool is_version(std::string_view v) {
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  return v.size() == 8 && v.substr(0, 5) == "HTTP/" && digit(v[5]) && v[6] == '.' && digit(v[7]);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool all_digits(std::string_view s) {
  return !s.empty() && s.size() <= 5 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The body's length, and whether one was given.
struct BodyLength {
  bool given = false;
  size_t bytes = 0;
};

// Reads the field lines between the request line and the blank line.
bool parse_fields(std::string_view fields, HttpRequest* out, BodyLength* length) {
  while (!fields.empty()) {
    size_t eol = fields.find('\n');
    std::string_view line = fields.substr(0, eol);
    fields = eol == std::string_view::npos ? std::string_view() : fields.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) return false;
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "transfer-encoding")) return false;
    if (iequals(name, "content-length")) {
      size_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      // Digits past what size_t holds: a body too large (413), not a bad one.
      if (ec == std::errc::result_out_of_range) n = SIZE_MAX;
      if ((ec != std::errc() && ec != std::errc::result_out_of_range) ||
          end != value.data() + value.size() || value.empty() ||
          (length->given && n != length->bytes))
        return false;
      *length = {true, n};
      continue;
    }
    if (!iequals(name, "host")) continue;
    if (out->host) return false;
    out->host = std::string(value);
  }
  return true;
}

}  // namespace

HttpParse parse_http_request(std::string_view data, size_t max_head, HttpRequest* out,
                             size_t max_body) {
  // Bare LF line ends are accepted, as RFC 9112 section 2.2 allows. The head
  // ends at the first blank line of either kind: a later CRLF CRLF must not
  // pull what follows (a body, a second request) into the head.
  const size_t crlf = data.find("\r\n\r\n");
  const size_t lf = data.find("\n\n");
  const size_t end = std::min(crlf, lf);
  if (end == std::string_view::npos)
    return data.size() > max_head ? HttpParse::too_large : HttpParse::need_more;
  const size_t head_size = end + (end == lf ? 2 : 4);  // with its blank line
  if (head_size > max_head) return HttpParse::too_large;
  std::string_view head = data.substr(0, end);
  size_t first_eol = head.find('\n');
  std::string_view line = head.substr(0, first_eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // METHOD SP request-target SP HTTP-version, exactly one space apart.
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return HttpParse::bad;
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method) || !is_token(target) || target.front() != '/' || !is_version(version))
    return HttpParse::bad;
  HttpRequest request;
  request.method = std::string(method);
  request.path = std::string(target.substr(0, target.find('?')));
  BodyLength length;
  if (first_eol != std::string_view::npos &&
      !parse_fields(head.substr(first_eol + 1), &request, &length))
    return HttpParse::bad;
  if (length.bytes > max_body) return HttpParse::body_too_large;
  if (data.size() - head_size < length.bytes) return HttpParse::need_more;
  request.body = std::string(data.substr(head_size, length.bytes));
  request.size = head_size + length.bytes;
  *out = std::move(request);
  return HttpParse::done;
}

bool host_allowed(std::string_view host, const std::vector<std::string>& names) {
  // inet_pton() reads C strings: "[::\0junk]" would pass as "::". A Host is
  // printable ASCII without spaces, nothing else.
  if (!std::all_of(host.begin(), host.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
    return false;
  std::string_view name = host;
  if (!name.empty() && name.front() == '[') {
    size_t close = name.find(']');
    if (close == std::string_view::npos) return false;
    std::string_view rest = name.substr(close + 1);
    if (!rest.empty() && !(rest.front() == ':' && all_digits(rest.substr(1)))) return false;
    std::string literal(name.substr(1, close - 1));
    unsigned char bytes[16];
    return ::inet_pton(AF_INET6, literal.c_str(), bytes) == 1;
  }
  if (size_t colon = name.rfind(':'); colon != std::string_view::npos) {
    if (!all_digits(name.substr(colon + 1))) return false;
    name = name.substr(0, colon);
  }
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty()) return false;
  std::string text(name);
  unsigned char bytes[4];
  if (::inet_pton(AF_INET, text.c_str(), bytes) == 1) return true;
  if (iequals(name, "localhost")) return true;
  return std::any_of(names.begin(), names.end(), [name](const std::string& allowed) {
    std::string_view a = allowed;
    if (!a.empty() && a.back() == '.') a.remove_suffix(1);
    return !a.empty() && iequals(name, a);
  });
}

const char* http_reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 421:
      return "Misdirected Request";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Internal Server Error";
  }
}

std::optional<std::string> percent_decode(std::string_view text) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    const int high = hex(text[i + 1]);
    const int low = hex(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

}  // namespace tcpkit::cli

#include "relay/api_request.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace tcpkit::cli {
namespace {

bool is_token(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

ApiParse parse_api_request(std::string_view data, size_t max_head, size_t max_body,
                           ApiRequest* out) {
  size_t end = data.find("\r\n\r\n");
  size_t head_size = end == std::string_view::npos ? end : end + 4;
  if (size_t lf = data.find("\n\n"); lf != std::string_view::npos && lf + 2 < head_size)
    head_size = lf + 2;
  if (head_size == std::string_view::npos)
    return data.size() > max_head ? ApiParse::too_large : ApiParse::need_more;
  if (head_size > max_head) return ApiParse::too_large;
  std::string_view head = data.substr(0, head_size);

  size_t eol = head.find('\n');
  std::string_view line = trim(head.substr(0, eol));
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return ApiParse::bad;
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (!is_token(method) || !is_token(target) || line.substr(sp2 + 1, 5) != "HTTP/" ||
      target[0] != '/')
    return ApiParse::bad;

  bool have_length = false;
  size_t length = 0;
  std::string host;
  for (size_t pos = eol + 1; pos < head.size();) {
    size_t next = head.find('\n', pos);
    std::string_view field = trim(head.substr(pos, next - pos));
    pos = next == std::string_view::npos ? head.size() : next + 1;
    if (field.empty()) continue;
    size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0 || !is_token(field.substr(0, colon)))
      return ApiParse::bad;
    std::string_view name = field.substr(0, colon);
    std::string_view value = trim(field.substr(colon + 1));
    if (iequals(name, "Transfer-Encoding")) return ApiParse::bad;
    if (iequals(name, "Host")) {
      if (!host.empty()) return ApiParse::bad;  // two Host headers: which one is checked?
      host = std::string(value);
    }
    if (iequals(name, "Content-Length")) {
      size_t n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || (have_length && n != length))
        return ApiParse::bad;
      have_length = true;
      length = n;
    }
  }
  if (length > max_body) return ApiParse::too_large;
  if (data.size() - head_size < length) return ApiParse::need_more;
  out->method = std::string(method);
  out->path = std::string(target.substr(0, target.find('?')));
  out->host = std::move(host);
  out->body = std::string(data.substr(head_size, length));
  out->size = head_size + length;
  return ApiParse::done;
}

bool host_is_safe(std::string_view host) {
  std::string name(host);
  if (!name.empty() && name.front() == '[') {
    size_t close = name.find(']');
    if (close == std::string::npos) return false;
    name = name.substr(1, close - 1);
    in6_addr v6{};
    return inet_pton(AF_INET6, name.c_str(), &v6) == 1;
  }
  if (size_t colon = name.rfind(':'); colon != std::string::npos) name.resize(colon);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (name == "localhost") return true;
  in_addr v4{};
  return inet_pton(AF_INET, name.c_str(), &v4) == 1;
}

}  // namespace tcpkit::cli

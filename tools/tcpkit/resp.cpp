#include "resp.h"

#include <charconv>

namespace tcpkit::cli {

std::string resp_command(std::initializer_list<std::string_view> args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (std::string_view arg : args) {
    out += "$" + std::to_string(arg.size()) + "\r\n";
    out += arg;
    out += "\r\n";
  }
  return out;
}

namespace {

constexpr int kMaxDepth = 8;
constexpr int64_t kMaxArray = 1024;  // pub/sub pushes are 3 or 4 elements

// Reads "<line>\r\n" at `pos`; false when the CRLF has not arrived yet.
bool read_line(std::string_view data, size_t& pos, std::string_view* line) {
  size_t end = data.find("\r\n", pos);
  if (end == std::string_view::npos) return false;
  *line = data.substr(pos, end - pos);
  pos = end + 2;
  return true;
}

bool to_int(std::string_view text, int64_t* value) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return ec == std::errc() && ptr == text.data() + text.size() && !text.empty();
}

RespParse parse_at(std::string_view data, size_t& pos, size_t max_bulk, int depth, RespValue* out) {
  if (depth > kMaxDepth) return RespParse::bad;
  if (pos >= data.size()) return RespParse::need_more;
  const char kind = data[pos++];
  std::string_view line;
  if (!read_line(data, pos, &line)) {
    // A length or number line longer than any legal one will never complete.
    const size_t limit = kind == '+' || kind == '-' ? max_bulk : 32;
    return data.size() - pos > limit ? RespParse::bad : RespParse::need_more;
  }
  switch (kind) {
    case '+':
    case '-':
      out->type = kind == '+' ? RespValue::Type::simple : RespValue::Type::error;
      out->text = std::string(line);
      return RespParse::value;
    case ':':
      out->type = RespValue::Type::integer;
      return to_int(line, &out->integer) ? RespParse::value : RespParse::bad;
    case '$': {
      int64_t len = 0;
      if (!to_int(line, &len) || len < -1 || len > static_cast<int64_t>(max_bulk))
        return RespParse::bad;
      if (len == -1) {
        out->type = RespValue::Type::nil;
        return RespParse::value;
      }
      const auto n = static_cast<size_t>(len);
      if (data.size() - pos < n + 2) return RespParse::need_more;
      if (data.substr(pos + n, 2) != "\r\n") return RespParse::bad;
      out->type = RespValue::Type::bulk;
      out->text = std::string(data.substr(pos, n));
      pos += n + 2;
      return RespParse::value;
    }
    case '*': {
      int64_t count = 0;
      if (!to_int(line, &count) || count < -1 || count > kMaxArray) return RespParse::bad;
      if (count == -1) {
        out->type = RespValue::Type::nil;
        return RespParse::value;
      }
      out->type = RespValue::Type::array;
      out->elements.clear();
      out->elements.resize(static_cast<size_t>(count));
      for (auto& element : out->elements) {
        RespParse r = parse_at(data, pos, max_bulk, depth + 1, &element);
        if (r != RespParse::value) return r;
      }
      return RespParse::value;
    }
  }
  return RespParse::bad;
}

}  // namespace

RespParse parse_resp(std::string_view data, size_t max_bulk, RespValue* out, size_t* consumed) {
  size_t pos = 0;
  RespParse r = parse_at(data, pos, max_bulk, 0, out);
  if (r == RespParse::value) *consumed = pos;
  return r;
}

}  // namespace tcpkit::cli

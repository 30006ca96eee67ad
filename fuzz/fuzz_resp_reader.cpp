// Fuzzes the Redis reply reader (RespReader over hiredis) the way a hostile
// Redis would feed it: the first byte picks the size of the reads. Invariants:
// never crash or leak (ASan); every reply honours the limits; after `bad` the
// reader stays bad; the replies do not depend on how the bytes were split.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "serve/resp.h"

using tcpkit::cli::RespLimits;
using tcpkit::cli::RespParse;
using tcpkit::cli::RespReader;
using tcpkit::cli::RespValue;

namespace {

constexpr RespLimits kLimits{64, 4, 2, 160};

void check_limits(const RespValue& v, int depth) {
  if (v.type == RespValue::Type::array)
    check(depth < kLimits.max_depth, "arrays nest no deeper than the limit");
  check(v.text.size() <= kLimits.max_bulk, "strings honour the limit");
  check(v.elements.size() <= kLimits.max_elements, "arrays honour the limit");
  for (const auto& e : v.elements) check_limits(e, depth + 1);
}

size_t string_bytes(const RespValue& v) {
  size_t bytes = v.text.size();
  for (const auto& e : v.elements) bytes += string_bytes(e);
  return bytes;
}

void flatten(const RespValue& v, std::string* out) {
  *out += std::to_string(static_cast<int>(v.type)) + ":" + std::to_string(v.text.size()) + ":" +
          v.text + ":" + std::to_string(v.integer) + "[";
  for (const auto& e : v.elements) flatten(e, out);
  *out += "]";
}

// Every reply, flattened, and whether the reader ended bad.
std::pair<std::string, bool> read_all(std::string_view input, size_t chunk) {
  RespReader reader(kLimits);
  std::string replies;
  for (size_t pos = 0; pos < input.size(); pos += chunk) {
    reader.feed(input.substr(pos, chunk));
    for (;;) {
      RespValue v;
      RespParse r = reader.next(&v);
      if (r == RespParse::need_more) break;
      if (r == RespParse::bad) {
        check(!reader.error().empty(), "a bad reply says why");
        RespValue again;
        check(reader.next(&again) == RespParse::bad, "a failed reader stays failed");
        return {replies, true};
      }
      check_limits(v, 0);
      check(string_bytes(v) <= kLimits.max_reply_bytes, "a reply's strings honour the limit");
      flatten(v, &replies);
    }
  }
  return {replies, false};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = data[0] % 16 + 1;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto split = read_all(input, chunk);
  auto whole = read_all(input, input.size() + 1);
  // The buffered-bytes limit may trip at a different point with other splits,
  // so only the replies before any failure must agree.
  if (!split.second && !whole.second)
    check(split.first == whole.first, "the split does not change the replies");
  return 0;
}

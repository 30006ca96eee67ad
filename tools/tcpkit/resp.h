// RESP, the Redis serialization protocol (version 2), as much as a pub/sub
// client needs: commands out as arrays of bulk strings, and every reply
// type in. See https://redis.io/docs/latest/develop/reference/protocol-spec/
//
// Plain functions on values; any thread.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace tcpkit::cli {

struct RespValue {
  enum class Type { simple, error, integer, bulk, nil, array };
  Type type = Type::nil;
  std::string text;                 // simple, error, bulk
  int64_t integer = 0;              // integer
  std::vector<RespValue> elements;  // array
};

// "*3\r\n$7\r\nPUBLISH\r\n..." — binary-safe, so a chat line may hold any byte.
std::string resp_command(std::initializer_list<std::string_view> args);

enum class RespParse { need_more, value, bad };

// Parses one value from the front of `data`; on `value`, `*consumed` is its
// length. Bulk strings over `max_bulk` bytes and arrays nested deeper than a
// few levels are `bad`: a confused or hostile peer must not make us buffer
// without bound.
RespParse parse_resp(std::string_view data, size_t max_bulk, RespValue* out, size_t* consumed);

}  // namespace tcpkit::cli

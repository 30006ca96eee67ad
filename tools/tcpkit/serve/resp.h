// RESP, the Redis serialization protocol (version 2), as much as a pub/sub
// client needs: commands out as arrays of bulk strings, and replies in
// through hiredis's reply reader. See
// https://redis.io/docs/latest/develop/reference/protocol-spec/
//
// Redis is outside the process, so its replies are hostile input (design
// decision 10) and RespReader bounds them: a bulk string over max_bulk bytes,
// an array of more than max_elements, arrays nested deeper than max_depth,
// strings of more than max_reply_bytes in all in one reply, or a malformed
// reply stops the reader for good (the caller reconnects).
// The reader streams: each byte is parsed once, however the reply is split
// across reads, and a reply is buffered only up to its limits.
//
// resp_command() is a plain function, any thread. A RespReader belongs to one
// connection's loop.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;

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

struct RespLimits {
  size_t max_bulk = size_t{512} * 1024;  // bytes in one bulk, simple or error string
  size_t max_elements = 16;              // pub/sub pushes have 3 or 4
  int max_depth = 2;                     // an array inside an array, no deeper
  // Bytes in all the strings of one reply, those still arriving included:
  // without it, max_elements arrays of max_elements strings of max_bulk
  // bytes each are buffered (256 of them, with the defaults).
  size_t max_reply_bytes = size_t{1024} * 1024;
};

enum class RespParse { need_more, value, bad };

class RespReader {
 public:
  explicit RespReader(RespLimits limits);
  ~RespReader();
  RespReader(const RespReader&) = delete;
  RespReader& operator=(const RespReader&) = delete;

  // Hands bytes from the connection to the reader.
  void feed(std::string_view bytes);
  // The next complete reply, if one is in. After `bad` the reader is done;
  // error() says why.
  RespParse next(RespValue* out);
  const std::string& error() const { return error_; }

 private:
  friend struct RespBuilder;

  RespLimits limits_;
  redisReader* reader_;
  std::string error_;
  bool failed_ = false;
  size_t reply_bytes_ = 0;  // in the strings of the reply being read
};

}  // namespace tcpkit::cli

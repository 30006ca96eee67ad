#include "serve/resp.h"

#include <fmt/core.h>
#include <hiredis/read.h>

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

// hiredis builds replies through these callbacks. A reply's root is
// allocated here and freed by free_object(); its elements live in the
// root's vectors, sized once by create_array(), so their addresses hold.
// Returning null makes hiredis stop with an error; `limit` says which.
struct RespBuilder {
  static RespReader& owner(const redisReadTask* task) {
    return *static_cast<RespReader*>(task->privdata);
  }

  static void* refuse(const redisReadTask* task, std::string why) {
    RespReader& r = owner(task);
    if (r.error_.empty()) r.error_ = std::move(why);
    return nullptr;
  }

  static int depth(const redisReadTask* task) {
    int d = 0;
    for (const redisReadTask* t = task->parent; t != nullptr; t = t->parent) ++d;
    return d;
  }

  static RespValue* place(const redisReadTask* task) {
    if (task->parent == nullptr) return new RespValue;
    auto* parent = static_cast<RespValue*>(task->parent->obj);
    return &parent->elements[static_cast<size_t>(task->idx)];
  }

  static void* create_string(const redisReadTask* task, char* str, size_t len) {
    RespReader& reader = owner(task);
    const RespLimits& limits = reader.limits_;
    if (len > limits.max_bulk)
      return refuse(task, fmt::format("a string of {} bytes (limit {})", len, limits.max_bulk));
    reader.reply_bytes_ += len;
    if (reader.reply_bytes_ > limits.max_reply_bytes)
      return refuse(task, fmt::format("a reply of over {} bytes in its strings (limit {})",
                                      reader.reply_bytes_, limits.max_reply_bytes));
    RespValue* v = place(task);
    v->type = task->type == REDIS_REPLY_ERROR    ? RespValue::Type::error
              : task->type == REDIS_REPLY_STATUS ? RespValue::Type::simple
                                                 : RespValue::Type::bulk;
    v->text.assign(str, len);
    return v;
  }

  static void* create_array(const redisReadTask* task, int elements) {
    const RespLimits& limits = owner(task).limits_;
    if (elements < 0 || static_cast<size_t>(elements) > limits.max_elements)
      return refuse(
          task, fmt::format("an array of {} elements (limit {})", elements, limits.max_elements));
    if (depth(task) >= limits.max_depth)
      return refuse(task, fmt::format("arrays nested deeper than {}", limits.max_depth));
    RespValue* v = place(task);
    v->type = RespValue::Type::array;
    v->elements.resize(static_cast<size_t>(elements));
    return v;
  }

  static void* create_integer(const redisReadTask* task, long long value) {
    RespValue* v = place(task);
    v->type = RespValue::Type::integer;
    v->integer = value;
    return v;
  }

  static void* create_nil(const redisReadTask* task) {
    RespValue* v = place(task);
    v->type = RespValue::Type::nil;
    return v;
  }

  // hiredis frees only roots (a reply, or a half-built one on error).
  static void free_object(void* obj) { delete static_cast<RespValue*>(obj); }
};

namespace {

// hiredis takes these through a non-const pointer, but only reads them.
const redisReplyObjectFunctions kBuilder = {RespBuilder::create_string, RespBuilder::create_array,
                                            RespBuilder::create_integer, RespBuilder::create_nil,
                                            RespBuilder::free_object};

// Room for the type byte, a length line and CRLFs around the largest string.
constexpr size_t kHeaderSlack = 64;

}  // namespace

RespReader::RespReader(RespLimits limits)
    : limits_(limits),
      reader_(redisReaderCreateWithFunctions(const_cast<redisReplyObjectFunctions*>(&kBuilder))) {
  if (reader_ == nullptr) {
    failed_ = true;
    error_ = "out of memory";
    return;
  }
  // Not redisReaderSetPrivdata(): the macro casts a pointer to int, which C++
  // refuses.
  reader_->privdata = this;
}

RespReader::~RespReader() {
  if (reader_ != nullptr) redisReaderFree(reader_);
}

void RespReader::feed(std::string_view bytes) {
  if (failed_ || bytes.empty()) return;
  if (redisReaderFeed(reader_, bytes.data(), bytes.size()) != REDIS_OK) {
    failed_ = true;
    error_ = "out of memory";
  }
}

RespParse RespReader::next(RespValue* out) {
  if (failed_) return RespParse::bad;
  void* reply = nullptr;
  if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
    failed_ = true;
    if (error_.empty()) error_ = reader_->errstr;
    return RespParse::bad;
  }
  if (reply == nullptr) {
    // hiredis waits for a whole string before it hands it to create_string,
    // so the limit on strings is enforced here too, on what is waiting: the
    // rest of the reply's elements were parsed and left the buffer already.
    // A line without its CRLF (a status, a length) counts the same way.
    const size_t waiting = reader_->len - reader_->pos;
    if (waiting > limits_.max_bulk + kHeaderSlack) {
      failed_ = true;
      error_ = fmt::format("a string over {} bytes (limit {})", waiting - kHeaderSlack,
                           limits_.max_bulk);
      return RespParse::bad;
    }
    // So is the limit on the reply: what is waiting is the rest of it.
    if (reply_bytes_ + waiting > limits_.max_reply_bytes + kHeaderSlack) {
      failed_ = true;
      error_ = fmt::format("a reply of over {} bytes in its strings (limit {})",
                           reply_bytes_ + waiting - kHeaderSlack, limits_.max_reply_bytes);
      return RespParse::bad;
    }
    return RespParse::need_more;
  }
  reply_bytes_ = 0;
  auto* value = static_cast<RespValue*>(reply);
  *out = std::move(*value);
  delete value;
  return RespParse::value;
}

}  // namespace tcpkit::cli

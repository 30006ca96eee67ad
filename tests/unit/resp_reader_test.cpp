// RespReader: Redis replies through hiredis's reader, with the limits that
// keep a broken or hostile Redis from costing us memory or CPU.
#include "serve/resp.h"

#include <gtest/gtest.h>

#include <string>

using tcpkit::cli::resp_command;
using tcpkit::cli::RespLimits;
using tcpkit::cli::RespParse;
using tcpkit::cli::RespReader;
using tcpkit::cli::RespValue;
using namespace std::string_literals;

namespace {

RespLimits limits(size_t max_bulk = 1024) {
  RespLimits l;
  l.max_bulk = max_bulk;
  return l;
}

std::string push(std::string_view payload) {
  return resp_command({"message", "tcpkit:chat", payload});
}

}  // namespace

TEST(RespReader, ReadsEveryReplyType) {
  RespReader reader(limits());
  reader.feed("+OK\r\n-ERR no\r\n:42\r\n$3\r\na\0b\r\n$-1\r\n*2\r\n$1\r\nx\r\n:7\r\n"s);
  RespValue v;
  ASSERT_EQ(reader.next(&v), RespParse::value);
  EXPECT_EQ(v.type, RespValue::Type::simple);
  EXPECT_EQ(v.text, "OK");
  ASSERT_EQ(reader.next(&v), RespParse::value);
  EXPECT_EQ(v.type, RespValue::Type::error);
  EXPECT_EQ(v.text, "ERR no");
  ASSERT_EQ(reader.next(&v), RespParse::value);
  EXPECT_EQ(v.type, RespValue::Type::integer);
  EXPECT_EQ(v.integer, 42);
  ASSERT_EQ(reader.next(&v), RespParse::value);
  EXPECT_EQ(v.type, RespValue::Type::bulk);
  EXPECT_EQ(v.text, std::string("a\0b", 3));
  ASSERT_EQ(reader.next(&v), RespParse::value);
  EXPECT_EQ(v.type, RespValue::Type::nil);
  ASSERT_EQ(reader.next(&v), RespParse::value);
  ASSERT_EQ(v.type, RespValue::Type::array);
  ASSERT_EQ(v.elements.size(), 2u);
  EXPECT_EQ(v.elements[0].text, "x");
  EXPECT_EQ(v.elements[1].integer, 7);
  EXPECT_EQ(reader.next(&v), RespParse::need_more);
}

TEST(RespReader, AReplySplitAtEveryByteReadsTheSame) {
  const std::string wire = push("id\n<alice> hello\n") + push("second");
  RespReader reader(limits());
  std::vector<std::string> payloads;
  for (char c : wire) {
    reader.feed(std::string_view(&c, 1));
    RespValue v;
    while (reader.next(&v) == RespParse::value) payloads.push_back(v.elements.at(2).text);
  }
  EXPECT_EQ(payloads, (std::vector<std::string>{"id\n<alice> hello\n", "second"}));
}

// Regression: arrays of 1024 elements nested 8 deep were accepted.
TEST(RespReader, RefusesDeepNestingAndLongArrays) {
  {
    RespReader reader(limits());
    reader.feed("*1\r\n*1\r\n*1\r\n:1\r\n");
    RespValue v;
    EXPECT_EQ(reader.next(&v), RespParse::bad);
    EXPECT_NE(reader.error().find("nested"), std::string::npos) << reader.error();
  }
  {
    RespReader reader(limits());
    reader.feed("*1024\r\n");
    RespValue v;
    EXPECT_EQ(reader.next(&v), RespParse::bad);
    EXPECT_NE(reader.error().find("1024 elements"), std::string::npos) << reader.error();
  }
  {
    RespReader reader(limits());
    reader.feed("*2\r\n*1\r\n:1\r\n:2\r\n");  // one level of nesting is fine
    RespValue v;
    ASSERT_EQ(reader.next(&v), RespParse::value) << reader.error();
    EXPECT_EQ(v.elements.at(0).elements.at(0).integer, 1);
  }
}

// Regression: the limit on a bulk was 64 MiB whatever --max-message said.
TEST(RespReader, RefusesAStringOverTheLimitBeforeItIsAllBuffered) {
  RespReader reader(limits(1024));
  reader.feed("*3\r\n$7\r\nmessage\r\n$11\r\ntcpkit:chat\r\n$100000000\r\n");
  RespValue v;
  EXPECT_EQ(reader.next(&v), RespParse::need_more);  // a length alone is no proof yet
  reader.feed(std::string(2048, 'x'));
  EXPECT_EQ(reader.next(&v), RespParse::bad);
  EXPECT_NE(reader.error().find("limit 1024"), std::string::npos) << reader.error();
  // A reader that failed stays failed: the link is reconnected, not resynced.
  reader.feed("+OK\r\n");
  EXPECT_EQ(reader.next(&v), RespParse::bad);
}

TEST(RespReader, RefusesAStatusLineWithoutEnd) {
  RespReader reader(limits(1024));
  reader.feed("+" + std::string(4096, 'a'));
  RespValue v;
  EXPECT_EQ(reader.next(&v), RespParse::bad);
}

TEST(RespReader, RefusesMalformedReplies) {
  // hiredis 0.14 reads numbers leniently (":12x" is 12, "*x" an empty
  // array): harmless, the limits still hold. What it refuses is a reply of
  // no known type, where resynchronising is impossible.
  for (const char* wire : {"?what\r\n", "hello\r\n", "\r\n"}) {
    RespReader reader(limits());
    reader.feed(wire);
    RespValue v;
    EXPECT_EQ(reader.next(&v), RespParse::bad) << wire;
    EXPECT_FALSE(reader.error().empty()) << wire;
  }
}

TEST(RespReader, ABulkAtTheLimitIsRead) {
  RespReader reader(limits(1024));
  reader.feed(push(std::string(1024, 'y')));
  RespValue v;
  ASSERT_EQ(reader.next(&v), RespParse::value) << reader.error();
  EXPECT_EQ(v.elements.at(2).text.size(), 1024u);
}

namespace {

std::string bulk(size_t size) {
  return "$" + std::to_string(size) + "\r\n" + std::string(size, 'z') + "\r\n";
}

RespLimits reply_limits(size_t max_bulk, size_t max_reply_bytes) {
  RespLimits l = limits(max_bulk);
  l.max_reply_bytes = max_reply_bytes;
  return l;
}

}  // namespace

// Regression: each string was held to max_bulk, but a reply was not held
// at all: 16 arrays of 16 strings of max_bulk bytes (with the cluster's
// limits, 256 x 8 MiB) were buffered before anything was refused.
TEST(RespReader, RefusesAReplyWhoseStringsTogetherAreOverTheLimit) {
  {
    RespReader reader(reply_limits(1024, 4096));
    std::string wire = "*16\r\n";
    for (int i = 0; i < 16; ++i) wire += bulk(1024);
    reader.feed(wire);
    RespValue v;
    EXPECT_EQ(reader.next(&v), RespParse::bad);
    EXPECT_NE(reader.error().find("a reply of over"), std::string::npos) << reader.error();
    EXPECT_NE(reader.error().find("limit 4096"), std::string::npos) << reader.error();
  }
  {
    RespReader reader(reply_limits(1024, 4096));
    std::string wire =
        "*2\r\n*3\r\n" + bulk(1024) + bulk(1024) + bulk(1024) + "*3\r\n" + bulk(1024) + bulk(1024);
    reader.feed(wire);
    RespValue v;
    EXPECT_EQ(reader.next(&v), RespParse::bad);
    EXPECT_NE(reader.error().find("limit 4096"), std::string::npos) << reader.error();
  }
}

TEST(RespReader, RefusesAReplyOverTheLimitBeforeItIsAllBuffered) {
  RespReader reader(reply_limits(1024, 2500));
  reader.feed("*3\r\n" + bulk(1000) + bulk(1000) + "$1000\r\n");
  RespValue v;
  EXPECT_EQ(reader.next(&v), RespParse::need_more);
  reader.feed(std::string(600, 'z'));
  EXPECT_EQ(reader.next(&v), RespParse::bad);
  EXPECT_NE(reader.error().find("limit 2500"), std::string::npos) << reader.error();
}

TEST(RespReader, TheReplyLimitCountsEachReplyOnItsOwn) {
  RespReader reader(reply_limits(1024, 1100));
  std::string wire;
  for (int i = 0; i < 10; ++i) wire += push(std::string(1000, 'p'));
  for (size_t pos = 0; pos < wire.size(); pos += 700) reader.feed(wire.substr(pos, 700));
  RespValue v;
  int read = 0;
  while (reader.next(&v) == RespParse::value) ++read;
  EXPECT_EQ(read, 10) << reader.error();
}

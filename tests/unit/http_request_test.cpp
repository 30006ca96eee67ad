// The HTTP request parser of the metrics server and the chaos API, and the Host check.
#include "common/http_request.h"

#include <gtest/gtest.h>

using tcpkit::cli::host_allowed;
using tcpkit::cli::HttpParse;
using tcpkit::cli::HttpRequest;
using tcpkit::cli::parse_http_request;
using tcpkit::cli::percent_decode;
using namespace std::string_literals;

TEST(HttpRequest, ParsesTheRequestLineAndHost) {
  HttpRequest r;
  ASSERT_EQ(
      parse_http_request(
          "GET /metrics?x=1 HTTP/1.1\r\nAccept: */*\r\nhOsT:  127.0.0.1:9100 \r\n\r\n", 8192, &r),
      HttpParse::done);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/metrics");
  ASSERT_TRUE(r.host);
  EXPECT_EQ(*r.host, "127.0.0.1:9100");
}

TEST(HttpRequest, NoHostIsNoHost) {
  HttpRequest r;
  ASSERT_EQ(parse_http_request("GET / HTTP/1.0\n\n", 8192, &r), HttpParse::done);
  EXPECT_FALSE(r.host);
}

TEST(HttpRequest, WaitsForTheBlankLineWithinTheLimit) {
  HttpRequest r;
  EXPECT_EQ(parse_http_request("GET / HTTP/1.1\r\nHost: a\r\n", 8192, &r), HttpParse::need_more);
  EXPECT_EQ(parse_http_request(std::string(9000, 'a'), 8192, &r), HttpParse::too_large);
}

TEST(HttpRequest, RefusesBrokenHeads) {
  HttpRequest r;
  for (const char* head : {"GET /\r\n\r\n", "GET  / HTTP/1.1\r\n\r\n", "GET / FTP/1\r\n\r\n",
                           "GET / HTTP/1.1x\r\n\r\n", "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
                           "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"}) {
    EXPECT_EQ(parse_http_request(head, 8192, &r), HttpParse::bad) << head;
  }
}

// Found by fuzz_http_request: with a bare-LF blank line first and a CRLF one
// later, the head ran to the later one and took in what followed it.
TEST(HttpRequest, TheHeadEndsAtTheFirstBlankLineOfEitherKind) {
  HttpRequest r;
  ASSERT_EQ(parse_http_request("GET / HTTP/1.1\n\nHost: evil\r\n\r\n", 8192, &r), HttpParse::done);
  EXPECT_FALSE(r.host);
  EXPECT_EQ(parse_http_request("GET / HTTP/1.1\r\0junk\n\n"s, 8192, &r), HttpParse::bad);
}

// Regression: no Host check, so DNS rebinding could read /clients.json.
TEST(HttpRequest, HostMustNameThisServer) {
  const std::vector<std::string> names = {"metrics.internal"};
  for (const char* ok :
       {"127.0.0.1", "127.0.0.1:9100", "[::1]:9100", "[::1]", "localhost", "LocalHost:80",
        "localhost.", "metrics.internal:9100", "METRICS.INTERNAL", "10.1.2.3:1"}) {
    EXPECT_TRUE(host_allowed(ok, names)) << ok;
  }
  for (const char* bad : {"", "evil.example", "evil.example:9100", "localhost.evil.example",
                          "127.0.0.1.nip.io", "metrics.internal.evil", "[::1", "[::1]x",
                          "127.0.0.1:", "127.0.0.1:abc", "[evil.example]:80", "localhost:9100:1"}) {
    EXPECT_FALSE(host_allowed(bad, names)) << bad;
  }
  EXPECT_FALSE(host_allowed(std::string_view("localhost\0x", 11), names));
  // Found by fuzz_http_request: inet_pton() stopped at the NUL and saw "::".
  EXPECT_FALSE(host_allowed("[::\0\0junk]"s, names));
  EXPECT_FALSE(host_allowed("127.0.0.1\0.evil"s, names));
}

// The chaos API's requests carry a JSON body: Content-Length bytes, within
// the limit the server gives, never a chunked one.
TEST(HttpRequest, ReadsAContentLengthBodyWithinItsLimit) {
  HttpRequest r;
  const std::string request =
      "POST /proxies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\n";
  EXPECT_EQ(parse_http_request(request + "{}", 8192, &r, 64), HttpParse::need_more);
  ASSERT_EQ(parse_http_request(request + "{  }next", 8192, &r, 64), HttpParse::done);
  EXPECT_EQ(r.body, "{  }");
  EXPECT_EQ(r.size, request.size() + 4);
  EXPECT_EQ(parse_http_request(request + "{  }", 8192, &r, 3), HttpParse::body_too_large);
  EXPECT_EQ(parse_http_request(request + "{  }", 8192, &r), HttpParse::body_too_large);
}

// Regression: a length past what size_t holds was answered as a malformed
// request (400), where any other length over the limit gets 413.
TEST(HttpRequest, ALengthTooLargeForANumberIsABodyTooLarge) {
  HttpRequest r;
  EXPECT_EQ(parse_http_request("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: "
                               "99999999999999999999999\r\n\r\n",
                               8192, &r, 1 << 20),
            HttpParse::body_too_large);
  EXPECT_EQ(parse_http_request("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 9x\r\n\r\n", 8192,
                               &r, 1 << 20),
            HttpParse::bad);
}

TEST(HttpRequest, RefusesWhatCouldSmuggleARequest) {
  HttpRequest r;
  for (const char* head : {
           "POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 4x\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
           "GET http://example.com/ HTTP/1.1\r\n\r\n",
       }) {
    EXPECT_EQ(parse_http_request(std::string(head) + "abcd", 8192, &r, 64), HttpParse::bad) << head;
  }
  // The same length twice is one length.
  EXPECT_EQ(
      parse_http_request("POST / HTTP/1.1\r\nContent-Length: 4\r\ncontent-length: 4\r\n\r\nabcd",
                         8192, &r, 64),
      HttpParse::done);
}

TEST(HttpRequest, TheHeadLimitCountsTheBlankLine) {
  HttpRequest r;
  const std::string head = "GET / HTTP/1.1\r\n\r\n";  // 18 bytes
  EXPECT_EQ(parse_http_request(head, head.size(), &r), HttpParse::done);
  EXPECT_EQ(parse_http_request(head, head.size() - 1, &r), HttpParse::too_large);
}

TEST(HttpRequest, PercentDecodeDecodesEscapesAndRefusesBrokenOnes) {
  EXPECT_EQ(percent_decode("a%20b"), "a b");
  EXPECT_EQ(percent_decode("x%2Fy%2f"), "x/y/");
  EXPECT_EQ(percent_decode("%E4%B8%AD"), "中");
  EXPECT_EQ(percent_decode("plain"), "plain");
  EXPECT_EQ(percent_decode("%00"), "\0"s);
  EXPECT_EQ(percent_decode(""), "");
  for (const char* broken : {"%", "%2", "a%zz", "%2G", "%%"}) {
    EXPECT_EQ(percent_decode(broken), std::nullopt) << broken;
  }
}

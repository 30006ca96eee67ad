#include "tcpkit/result.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <set>
#include <string>
#include <system_error>

using tcpkit::Errc;
using tcpkit::Error;
using tcpkit::Result;

namespace {

// A function shaped like the library's setup calls, so the tests read like user code.
Result<int> parse_digit(char c) {
  if (c < '0' || c > '9') return Error(Errc::bad_port, std::string("digit '") + c + "'");
  return c - '0';
}

}  // namespace

TEST(Result, HoldsAValue) {
  auto r = parse_digit('7');
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(static_cast<bool>(r));
  EXPECT_EQ(r.value(), 7);
  EXPECT_EQ(*r, 7);
}

TEST(Result, HoldsAnError) {
  auto r = parse_digit('x');
  ASSERT_FALSE(r.ok());
  ASSERT_FALSE(static_cast<bool>(r));
  EXPECT_EQ(r.error().code(), tcpkit::make_error_code(Errc::bad_port));
  EXPECT_EQ(r.error().context(), "digit 'x'");
  EXPECT_EQ(r.error().message(), "digit 'x': port must be a number from 0 to 65535");
}

TEST(Result, ArrowReachesTheValue) {
  Result<std::string> r(std::string("hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->size(), 5u);
  r->append(" world");
  EXPECT_EQ(r.value(), "hello world");
}

TEST(Result, MovesAMoveOnlyValueOut) {
  Result<std::unique_ptr<int>> r(std::make_unique<int>(42));
  ASSERT_TRUE(r);
  std::unique_ptr<int> p = std::move(r).value();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 42);
}

TEST(Result, ErrorPassesThroughAnotherResultType) {
  // The library's pattern: `if (!x) return x.error();` into a different Result<T>.
  auto inner = parse_digit('?');
  ASSERT_FALSE(inner);
  Result<std::string> outer = inner.error();
  ASSERT_FALSE(outer);
  EXPECT_EQ(outer.error().message(), inner.error().message());
}

TEST(ResultVoid, DefaultIsSuccess) {
  Result<void> r;
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(static_cast<bool>(r));
}

TEST(ResultVoid, CarriesAnError) {
  Result<void> r = Error::from_errno(EPIPE, "send to 127.0.0.1:8888");
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error() == std::errc::broken_pipe);
  EXPECT_EQ(r.error().message(), "send to 127.0.0.1:8888: Broken pipe");
}

TEST(ResultError, FromErrnoReadsLikeTheSystemCallThatFailed) {
  auto e = Error::from_errno(ECONNREFUSED, "connect 127.0.0.1:8888");
  EXPECT_EQ(e.message(), "connect 127.0.0.1:8888: Connection refused");
  EXPECT_EQ(e.context(), "connect 127.0.0.1:8888");
  EXPECT_EQ(e.code().value(), ECONNREFUSED);
  EXPECT_EQ(e.code().category(), std::generic_category());
}

TEST(ResultError, AddressInUseMessage) {
  auto e = Error::from_errno(EADDRINUSE, "bind [::1]:8080");
  EXPECT_EQ(e.message(), "bind [::1]:8080: Address already in use");
}

TEST(ResultError, ComparesWithErrcByCodeOnly) {
  auto e = Error::from_errno(ETIMEDOUT, "connect 10.0.0.1:80");
  EXPECT_TRUE(e == std::errc::timed_out);
  EXPECT_FALSE(e == std::errc::connection_refused);
}

TEST(ResultError, WithoutContextIsOnlyTheReason) {
  auto e = Error::from_errno(ECONNRESET, "");
  EXPECT_EQ(e.message(), "Connection reset by peer");
  Error empty;
  EXPECT_FALSE(empty.code());
}

TEST(ResultError, FromErrcKeepsTheTcpkitCategory) {
  Error e(Errc::peer_closed, "recv from 127.0.0.1:9000");
  EXPECT_EQ(e.code().category(), tcpkit::tcpkit_category());
  EXPECT_EQ(e.code(), Errc::peer_closed);  // via is_error_code_enum
  EXPECT_NE(e.code(), Errc::bad_port);
  EXPECT_EQ(e.message(), "recv from 127.0.0.1:9000: connection closed by peer");
}

TEST(ResultErrc, CategoryIsNamedTcpkit) {
  EXPECT_STREQ(tcpkit::tcpkit_category().name(), "tcpkit");
  // One category object, so codes compare equal across translation units.
  EXPECT_EQ(&tcpkit::tcpkit_category(), &tcpkit::make_error_code(Errc::bad_host).category());
}

TEST(ResultErrc, EveryCodeHasItsOwnMessage) {
  const Errc all[] = {Errc::bad_address,     Errc::bad_port,
                      Errc::missing_port,    Errc::bad_host,
                      Errc::name_not_found,  Errc::peer_closed,
                      Errc::frame_too_large, Errc::line_too_long,
                      Errc::bad_encoding,    Errc::too_many_connections,
                      Errc::idle_timeout,    Errc::high_water_mark,
                      Errc::bad_proxy_header};
  const std::string unknown = tcpkit::tcpkit_category().message(0);
  EXPECT_EQ(unknown, "unknown tcpkit error");
  std::set<std::string> seen;
  for (Errc e : all) {
    std::string text = tcpkit::make_error_code(e).message();
    EXPECT_FALSE(text.empty()) << static_cast<int>(e);
    EXPECT_NE(text, unknown) << static_cast<int>(e);
    EXPECT_TRUE(seen.insert(text).second) << "duplicate message: " << text;
  }
}

TEST(ResultErrc, MessagesTellTheUserWhatToWrite) {
  EXPECT_EQ(tcpkit::make_error_code(Errc::missing_port).message(),
            "missing ':PORT' (write HOST:PORT, or [IPv6]:PORT)");
  EXPECT_EQ(tcpkit::make_error_code(Errc::bad_port).message(),
            "port must be a number from 0 to 65535");
  EXPECT_EQ(tcpkit::make_error_code(Errc::peer_closed).message(), "connection closed by peer");
}

TEST(ResultErrc, DoesNotEqualAnErrnoWithTheSameNumber) {
  // Errc::bad_address is 1, as is EPERM; the categories keep them apart.
  EXPECT_NE(tcpkit::make_error_code(Errc::bad_address),
            std::error_code(1, std::generic_category()));
}

// `tcpkit serve`'s one set of counters: what a sequence of connection events
// counts, how each close is told, and the Prometheus text read from them.
#include <gtest/gtest.h>

#include <string>
#include <system_error>

#include "serve/serve_metrics.h"
#include "serve/serve_observer.h"
#include "serve/serve_session.h"
#include "tcpkit/close_reason.h"
#include "tcpkit/result.h"

using tcpkit::CloseReason;
using tcpkit::Errc;
using tcpkit::cli::close_outcome;
using tcpkit::cli::render_metrics;
using tcpkit::cli::ServeCounters;
using tcpkit::cli::ServeSession;
using tcpkit::cli::TrafficSnapshot;

namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

TEST(ServeCounters, CountTheOpenClientsThroughConnectsAndCloses) {
  ServeCounters c;
  EXPECT_EQ(c.count_connection(), 1);
  EXPECT_EQ(c.count_connection(), 2);
  EXPECT_EQ(c.count_close(), 1);
  EXPECT_EQ(c.count_connection(), 2);
  EXPECT_EQ(c.connections(), 3u);
  EXPECT_EQ(c.open(), 2u);
  c.count_closed_bytes(10, 20);
  c.count_closed_bytes(1, 2);
  EXPECT_EQ(c.closed_bytes_received(), 11u);
  EXPECT_EQ(c.closed_bytes_sent(), 22u);
}

TEST(ServeCounters, RenderTheEventsAsPrometheusText) {
  ServeCounters c;
  c.count_connection();
  c.count_connection();
  c.count_messages_received(3);
  c.count_messages_sent();
  c.count_disconnect("peer closed", false);
  c.count_close();
  c.count_disconnect("connection reset", true);
  c.count_close();
  c.count_disconnect("Bad file descriptor", true);  // an unusual errno: its own label
  c.count_refused("too many connections");
  c.count_refused("untrusted proxy");
  TrafficSnapshot t;
  t.open = c.open();
  t.bytes_received = 100;
  t.bytes_sent = 200;
  const std::string text = render_metrics("echo", c, t);
  EXPECT_TRUE(has_line(text, R"(tcpkit_connections_open{mode="echo"} 0)")) << text;
  EXPECT_TRUE(has_line(text, R"(tcpkit_connections_total{mode="echo"} 2)")) << text;
  EXPECT_TRUE(has_line(text, R"(tcpkit_bytes_received_total{mode="echo"} 100)")) << text;
  EXPECT_TRUE(has_line(text, R"(tcpkit_bytes_sent_total{mode="echo"} 200)")) << text;
  EXPECT_TRUE(has_line(text, R"(tcpkit_messages_received_total{mode="echo"} 3)")) << text;
  EXPECT_TRUE(has_line(text, R"(tcpkit_messages_sent_total{mode="echo"} 1)")) << text;
  EXPECT_TRUE(has_line(text, R"(tcpkit_disconnects_total{mode="echo",reason="peer closed"} 1)"));
  EXPECT_TRUE(
      has_line(text, R"(tcpkit_disconnects_total{mode="echo",reason="connection reset"} 1)"));
  EXPECT_TRUE(
      has_line(text, R"(tcpkit_disconnects_total{mode="echo",reason="Bad file descriptor"} 1)"));
  EXPECT_TRUE(has_line(text, R"(tcpkit_errors_total{mode="echo",reason="connection reset"} 1)"));
  // A clean close is no error, and no known error label either.
  EXPECT_EQ(text.find(R"(tcpkit_errors_total{mode="echo",reason="peer closed"})"),
            std::string::npos);
  EXPECT_TRUE(
      has_line(text, R"(tcpkit_refused_total{mode="echo",reason="too many connections"} 1)"));
  EXPECT_TRUE(has_line(text, R"(tcpkit_refused_total{mode="echo",reason="not allowed"} 0)"));
  EXPECT_TRUE(has_line(text, R"(tcpkit_refused_total{mode="echo",reason="untrusted proxy"} 1)"));
}

TEST(CloseOutcome, TheConnectionsOwnReason) {
  auto peer = close_outcome(CloseReason::peer_closed, make_error_code(Errc::peer_closed), false,
                            nullptr, 10);
  EXPECT_EQ(peer.label, "peer closed");
  EXPECT_EQ(peer.text, std::string(tcpkit::describe(CloseReason::peer_closed)));
  EXPECT_FALSE(peer.error);
  EXPECT_FALSE(peer.refusal);

  auto reset = close_outcome(CloseReason::reset, std::make_error_code(std::errc::connection_reset),
                             false, nullptr, 10);
  EXPECT_EQ(reset.label, "connection reset");
  EXPECT_TRUE(reset.error);

  // A TLS client's FIN without close_notify: counted as the clean close it
  // is, logged as a possible truncation.
  auto cut = close_outcome(CloseReason::peer_closed, make_error_code(Errc::tls_truncated), false,
                           nullptr, 10);
  EXPECT_EQ(cut.label, "peer closed");
  EXPECT_EQ(cut.text, "peer closed without TLS close_notify (truncated)");
  EXPECT_FALSE(cut.error);

  auto other = close_outcome(
      CloseReason::error, std::make_error_code(std::errc::bad_file_descriptor), false, nullptr, 10);
  EXPECT_EQ(other.label, std::make_error_code(std::errc::bad_file_descriptor).message());
  EXPECT_EQ(other.text, other.label);
  EXPECT_TRUE(other.error);

  auto handshake = close_outcome(CloseReason::handshake_timeout,
                                 make_error_code(Errc::handshake_timeout), false, nullptr, 2.5);
  EXPECT_EQ(handshake.label, "TLS handshake timeout");
  EXPECT_EQ(handshake.text, "TLS handshake timeout (2.5 s)");
}

TEST(CloseOutcome, WithoutTextTheLabelAndKindStay) {
  // --quiet: no log line reads the words, so none are formatted; the
  // metrics' label and the error count are the same as with them.
  auto handshake = close_outcome(CloseReason::handshake_timeout,
                                 make_error_code(Errc::handshake_timeout), false, nullptr, 2.5,
                                 /*with_text=*/false);
  EXPECT_EQ(handshake.label, "TLS handshake timeout");
  EXPECT_TRUE(handshake.text.empty());
  EXPECT_TRUE(handshake.error);
  auto reset = close_outcome(CloseReason::reset, std::make_error_code(std::errc::connection_reset),
                             false, nullptr, 10, /*with_text=*/false);
  EXPECT_EQ(reset.label, "connection reset");
  EXPECT_TRUE(reset.text.empty());
  EXPECT_TRUE(reset.error);
}

TEST(CloseOutcome, ADrainingServerClosedIt) {
  const auto code = std::make_error_code(std::errc::operation_canceled);
  EXPECT_EQ(close_outcome(CloseReason::closed_locally, code, true, nullptr, 10).label,
            "server stopping");
  EXPECT_EQ(close_outcome(CloseReason::closed_locally, code, true, nullptr, 10).text,
            "server stopping");
  EXPECT_EQ(close_outcome(CloseReason::closed_locally, code, false, nullptr, 10).label, "closed");
  // A client that left by itself while the server drained is still the client's close.
  EXPECT_EQ(
      close_outcome(CloseReason::peer_closed, make_error_code(Errc::peer_closed), true, nullptr, 10)
          .label,
      "peer closed");
}

TEST(CloseOutcome, WeClosedItOurselves) {
  ServeSession refused;
  refused.rejected = true;
  refused.refusal = true;
  refused.close_label = "untrusted proxy";
  refused.close_note = "refused: untrusted proxy (not in --trusted-proxy)";
  auto r =
      close_outcome(CloseReason::refused, make_error_code(Errc::not_allowed), true, &refused, 10);
  EXPECT_EQ(r.label, "untrusted proxy");
  EXPECT_EQ(r.text, "refused: untrusted proxy (not in --trusted-proxy)");
  EXPECT_TRUE(r.refusal);
  EXPECT_FALSE(r.error);

  ServeSession bad;
  bad.rejected = true;
  bad.close_label = "bad PROXY header";
  bad.close_note = "bad PROXY header (not a PROXY header)";
  auto b = close_outcome(CloseReason::bad_proxy_header, make_error_code(Errc::bad_proxy_header),
                         false, &bad, 10);
  EXPECT_EQ(b.label, "bad PROXY header");
  EXPECT_EQ(b.text, "bad PROXY header (not a PROXY header)");
  EXPECT_FALSE(b.refusal);
  EXPECT_TRUE(b.error);

  // A session kept for other reasons (the ack log) leaves the close to the connection.
  ServeSession kept;
  EXPECT_EQ(close_outcome(CloseReason::idle_timeout, make_error_code(Errc::idle_timeout), false,
                          &kept, 10)
                .label,
            "idle timeout");
}

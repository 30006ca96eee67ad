// TlsContext and TlsSession in memory: two sessions pumped against each
// other (no sockets), through the handshake, data both ways, certificate
// and name verification, close_notify, and peers that do not speak TLS.
// The certificates are real, made by the openssl program (tls_test_util.h).
#include "tcpkit/tls_session.h"

#include <gtest/gtest.h>
#include <openssl/x509_vfy.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <string>

#include "tcpkit/tls_context.h"
#include "tcpkit/tls_error.h"
#include "tls_test_util.h"

using namespace tcpkit;
using namespace tcpkit::test;

namespace {

constexpr const char* kPeer = "127.0.0.1:443";

// Trusts the test server's certificate and expects the name `server_name`.
TlsClientOptions trusting(std::string server_name = "localhost") {
  return {TestCerts::get().cert("server"), true, std::move(server_name)};
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

// A client and a server session joined by a wire the test carries by hand.
struct Link {
  Link(const TlsContext& server_ctx, const TlsContext& client_ctx)
      : server(make(server_ctx, "127.0.0.1:50000")), client(make(client_ctx, kPeer)) {}

  static TlsSession make(const TlsContext& ctx, const char* peer) {
    auto s = TlsSession::create(ctx, peer);
    EXPECT_TRUE(s) << s.error().message();
    return std::move(*s);
  }

  // Carries ciphertext both ways until neither side has any left to send.
  void pump() {
    for (int round = 0; round < 10000; ++round) {
      bool moved = carry(client, server, server_plain, server_error);
      moved = carry(server, client, client_plain, client_error) || moved;
      if (!moved) return;
    }
    ADD_FAILURE() << "the sessions never went quiet";
  }

  static bool carry(TlsSession& from, TlsSession& to, Buffer& plain, std::optional<Error>& error) {
    std::string bytes = from.take_ciphertext();
    if (bytes.empty()) return false;
    to.feed_ciphertext(bytes);
    if (auto read = to.read_plaintext(plain); !read && !error) error = read.error();
    return true;
  }

  // A record of `plaintext` from the client, with one bit flipped.
  std::string forged_record(std::string_view plaintext) {
    client.write_plaintext(plaintext);
    std::string record = client.take_ciphertext();
    EXPECT_GT(record.size(), 20u);
    if (record.size() > 20) record[record.size() - 5] ^= 0x01;
    return record;
  }

  TlsSession server;
  TlsSession client;
  Buffer server_plain, client_plain;
  std::optional<Error> server_error, client_error;
};

// A Link whose handshake is done, with the contexts it was made from.
struct Handshaken {
  Handshaken() { link.pump(); }

  TlsContext server_ctx = server_context();
  TlsContext client_ctx = client_context(trusting());
  Link link{server_ctx, client_ctx};
};

// ---- contexts ---------------------------------------------------------------------------------

TEST(TlsContext, MissingCertificateFileIsNamedWithTheSystemReason) {
  auto ctx = TlsContext::server("/nonexistent/x.pem", TestCerts::get().key("server"));
  ASSERT_FALSE(ctx);
  EXPECT_EQ(ctx.error().message(),
            "TLS certificate '/nonexistent/x.pem': No such file or directory");
  EXPECT_TRUE(ctx.error() == std::errc::no_such_file_or_directory);
}

TEST(TlsContext, MissingKeyFileIsNamed) {
  auto ctx = TlsContext::server(TestCerts::get().cert("server"), "/nonexistent/k.pem");
  ASSERT_FALSE(ctx);
  EXPECT_EQ(ctx.error().message(),
            "TLS private key '/nonexistent/k.pem': No such file or directory");
}

// OpenSSL said "key values mismatch" and named the key alone; the usual
// cause is a chain file with another certificate first.
TEST(TlsContext, RegressionKeyOfAnotherCertificateNamesBothFiles) {
  const auto& certs = TestCerts::get();
  auto ctx = TlsContext::server(certs.cert("server"), certs.key("other"));
  ASSERT_FALSE(ctx);
  EXPECT_EQ(ctx.error().code(), Errc::tls_key_mismatch);
  EXPECT_EQ(ctx.error().message(),
            "TLS private key '" + certs.key("other") + "' and certificate file '" +
                certs.cert("server") +
                "': the key does not match the first certificate in the certificate file (the "
                "server's own certificate comes first, then its chain)");
}

// An encrypted key made OpenSSL ask for its passphrase on the terminal
// (blocking a server at its start); a DER key or a certificate given as
// the key read "unsupported".
TEST(TlsContext, RegressionKeysTcpkitCannotUseAreExplainedWithoutAPrompt) {
  const auto& certs = TestCerts::get();
  const std::string encrypted = certs.dir() + "/encrypted.key";
  const std::string der = certs.dir() + "/der.key";
  const std::string make =
      "openssl pkey -in " + certs.key("server") + " -aes256 -passout pass:secret -out " +
      encrypted + " && openssl pkey -in " + certs.key("server") + " -outform DER -out " + der;
  ASSERT_EQ(std::system(make.c_str()), 0) << make;
  // Without the fix OpenSSL prompts on /dev/tty: without a terminal the
  // prompt fails ("processing error"), with one it waits.
  auto ctx = TlsContext::server(certs.cert("server"), encrypted);
  ASSERT_FALSE(ctx);
  EXPECT_EQ(ctx.error().code(), Errc::tls_key_encrypted);
  EXPECT_EQ(ctx.error().message(),
            "TLS private key '" + encrypted +
                "': the key is encrypted, and tcpkit takes no passphrase (decrypt it first: "
                "openssl pkey -in KEY -out KEY.plain)");
  for (const std::string& key : {der, certs.cert("server")}) {
    ctx = TlsContext::server(certs.cert("server"), key);
    ASSERT_FALSE(ctx);
    EXPECT_EQ(ctx.error().message(), "TLS private key '" + key +
                                         "': not a PEM private key (a DER key, or a certificate?)");
  }
  // The refused passphrase leaves nothing behind: a good key still loads.
  EXPECT_TRUE(TlsContext::server(certs.cert("server"), certs.key("server")));
}

TEST(TlsContext, FileThatIsNotPemGivesOpenSslsReason) {
  const std::string path = TestCerts::get().dir() + "/garbage.pem";
  std::ofstream(path) << "this is not a certificate\n";
  auto ctx = TlsContext::server(path, TestCerts::get().key("server"));
  ASSERT_FALSE(ctx);
  EXPECT_EQ(ctx.error().context(), "TLS certificate '" + path + "'");
  EXPECT_EQ(ctx.error().code().category(), tls_category());
  EXPECT_NE(ctx.error().message().find("no start line"), std::string::npos)
      << ctx.error().message();
}

TEST(TlsContext, MissingCaFileIsNamed) {
  auto ctx = TlsContext::client({"/nonexistent/ca.pem", true, "localhost"});
  ASSERT_FALSE(ctx);
  EXPECT_EQ(ctx.error().message(), "TLS CA file '/nonexistent/ca.pem': No such file or directory");
}

// ---- handshake and data -----------------------------------------------------------------------

TEST(TlsSession, HandshakeThenDataBothWays) {
  auto server_ctx = server_context();
  auto client_ctx = client_context(trusting());
  Link link(server_ctx, client_ctx);
  EXPECT_TRUE(link.client.has_ciphertext()) << "a client's hello is ready after create()";
  EXPECT_FALSE(link.server.has_ciphertext());
  link.pump();
  ASSERT_FALSE(link.client_error) << link.client_error->message();
  ASSERT_FALSE(link.server_error) << link.server_error->message();
  ASSERT_TRUE(link.client.handshake_done());
  ASSERT_TRUE(link.server.handshake_done());
  EXPECT_EQ(link.client.protocol_version(), "TLSv1.3");
  EXPECT_FALSE(link.client.cipher().empty());

  link.client.write_plaintext("hello, server");
  link.pump();
  EXPECT_EQ(link.server_plain.retrieve_all_as_string(), "hello, server");
  link.server.write_plaintext("hello, client");
  link.pump();
  EXPECT_EQ(link.client_plain.retrieve_all_as_string(), "hello, client");
  EXPECT_FALSE(link.client.peer_closed());
  EXPECT_FALSE(link.server.peer_closed());
}

TEST(TlsSession, WritesBeforeTheHandshakeAreHeldAndSentInOrder) {
  auto server_ctx = server_context();
  auto client_ctx = client_context(trusting());
  Link link(server_ctx, client_ctx);
  link.client.write_plaintext("first ");
  link.client.write_plaintext("second");
  link.pump();
  ASSERT_FALSE(link.client_error);
  ASSERT_FALSE(link.server_error);
  EXPECT_EQ(link.server_plain.retrieve_all_as_string(), "first second");
}

TEST(TlsSession, MegabytesBothWaysArriveByteExact) {
  auto server_ctx = server_context();
  auto client_ctx = client_context(trusting());
  Link link(server_ctx, client_ctx);
  const std::string up = random_bytes(5 * 1024 * 1024 + 7, 1);
  const std::string down = random_bytes(3 * 1024 * 1024 + 3, 2);
  link.client.write_plaintext(up);
  link.pump();
  link.server.write_plaintext(down);
  link.pump();
  ASSERT_FALSE(link.client_error);
  ASSERT_FALSE(link.server_error);
  EXPECT_TRUE(link.server_plain.view() == up) << link.server_plain.readable_bytes() << " bytes";
  EXPECT_TRUE(link.client_plain.view() == down) << link.client_plain.readable_bytes() << " bytes";
}

TEST(TlsSession, SniCarriesANameButNeverAnAddress) {
  auto server_ctx = server_context();
  auto by_name = client_context(trusting("localhost"));
  Link named(server_ctx, by_name);
  named.pump();
  ASSERT_TRUE(named.server.handshake_done());
  EXPECT_EQ(named.server.requested_server_name(), "localhost");

  auto by_address = client_context(trusting("127.0.0.1"));
  Link addressed(server_ctx, by_address);
  addressed.pump();
  ASSERT_FALSE(addressed.client_error) << addressed.client_error->message();
  ASSERT_TRUE(addressed.server.handshake_done());
  EXPECT_EQ(addressed.server.requested_server_name(), "");
}

// ---- verification -----------------------------------------------------------------------------

// Returns the client's error after a handshake with the test server.
std::optional<Error> client_handshake_error(TlsClientOptions options) {
  auto server_ctx = server_context();
  auto client_ctx = client_context(std::move(options));
  Link link(server_ctx, client_ctx);
  link.client.write_plaintext("secret");
  link.pump();
  if (!link.client_error) {
    EXPECT_EQ(link.server_plain.retrieve_all_as_string(), "secret");
  } else {
    EXPECT_EQ(link.server_plain.readable_bytes(), 0u)
        << "nothing may be sent to an unverified server";
    EXPECT_FALSE(link.client.handshake_done());
    EXPECT_TRUE(link.client.failed());
    // The client told the server why, in an alert.
    EXPECT_TRUE(link.server_error.has_value());
  }
  return link.client_error;
}

TEST(TlsSession, CertificateFromAnUntrustedCaFailsWithTheVerifiersReason) {
  auto error = client_handshake_error({TestCerts::get().cert("other"), true, "localhost"});
  ASSERT_TRUE(error);
  EXPECT_EQ(error->message(),
            "TLS handshake with 127.0.0.1:443: certificate verify failed: self-signed certificate");
  EXPECT_EQ(error->code(),
            std::error_code(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, tls_verify_category()));
}

TEST(TlsSession, SelfSignedCertificateFailsAgainstTheSystemCas) {
  auto error = client_handshake_error({"", true, "localhost"});
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code().category(), tls_verify_category());
}

TEST(TlsSession, HostnameMismatchFails) {
  auto error = client_handshake_error(trusting("www.example.com"));
  ASSERT_TRUE(error);
  EXPECT_EQ(error->message(),
            "TLS handshake with 127.0.0.1:443: certificate verify failed: hostname mismatch");
}

TEST(TlsSession, AddressMismatchFailsAndTheCertificatesAddressPasses) {
  auto error = client_handshake_error(trusting("127.0.0.2"));
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code(), std::error_code(X509_V_ERR_IP_ADDRESS_MISMATCH, tls_verify_category()));
  EXPECT_FALSE(client_handshake_error(trusting("127.0.0.1")));
  EXPECT_FALSE(client_handshake_error(trusting("[127.0.0.1]")));
}

TEST(TlsSession, InsecureModeAcceptsAnyCertificateAndName) {
  auto server_ctx = server_context();
  auto client_ctx = client_context({"", false, "www.example.com"});
  Link link(server_ctx, client_ctx);
  link.client.write_plaintext("anyway");
  link.pump();
  ASSERT_FALSE(link.client_error) << link.client_error->message();
  EXPECT_EQ(link.server_plain.retrieve_all_as_string(), "anyway");
}

// ---- endings and strangers --------------------------------------------------------------------

TEST(TlsSession, CloseNotifyReachesThePeerAfterTheData) {
  auto server_ctx = server_context();
  auto client_ctx = client_context(trusting());
  Link link(server_ctx, client_ctx);
  link.pump();
  link.client.write_plaintext("last words");
  link.client.shutdown();
  link.client.write_plaintext("too late");
  link.pump();
  ASSERT_FALSE(link.server_error);
  EXPECT_EQ(link.server_plain.retrieve_all_as_string(), "last words");
  EXPECT_TRUE(link.server.peer_closed());
  EXPECT_FALSE(link.client.peer_closed());
  // The server may still answer before closing its side.
  link.server.write_plaintext("goodbye");
  link.server.shutdown();
  link.pump();
  EXPECT_EQ(link.client_plain.retrieve_all_as_string(), "goodbye");
  EXPECT_TRUE(link.client.peer_closed());
}

TEST(TlsSession, ShutdownDuringTheHandshakeWaitsForIt) {
  auto server_ctx = server_context();
  auto client_ctx = client_context(trusting());
  Link link(server_ctx, client_ctx);
  link.client.write_plaintext("early");
  link.client.shutdown();
  link.pump();
  ASSERT_FALSE(link.server_error);
  EXPECT_EQ(link.server_plain.retrieve_all_as_string(), "early");
  EXPECT_TRUE(link.server.peer_closed());
}

TEST(TlsSession, PlainHttpPeerIsRejectedForGood) {
  auto server_ctx = server_context();
  auto server = Link::make(server_ctx, kPeer);
  server.feed_ciphertext("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
  Buffer plain;
  auto read = server.read_plaintext(plain);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().message(), "TLS handshake with 127.0.0.1:443: http request");
  EXPECT_TRUE(server.failed());
  server.feed_ciphertext("more");
  auto again = server.read_plaintext(plain);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message(), read.error().message());
  EXPECT_EQ(plain.readable_bytes(), 0u);
}

// A client whose server speaks plain text (a banner, an HTTP answer) fails
// its handshake with a reason that is_plaintext_peer() knows, so that
// programs can ask "is the server speaking TLS on this port?"; other
// failures are not taken for it.
TEST(TlsSession, APlaintextServerIsToldFromOtherFailures) {
  auto client_ctx = client_context(trusting());
  for (std::string_view banner : {std::string_view("220 smtp.example.com ESMTP ready\r\n"),
                                  std::string_view("HTTP/1.1 400 Bad Request\r\n\r\n")}) {
    auto client = Link::make(client_ctx, kPeer);
    client.write_plaintext("hello");  // starts the handshake
    (void)client.take_ciphertext();
    client.feed_ciphertext(banner);
    Buffer plain;
    auto read = client.read_plaintext(plain);
    ASSERT_FALSE(read) << banner;
    EXPECT_TRUE(is_plaintext_peer(read.error().code())) << read.error().message();
  }
  Handshaken handshaken;
  handshaken.link.server.feed_ciphertext(handshaken.link.forged_record("pay 10 euros"));
  auto forged = handshaken.link.server.read_plaintext(handshaken.link.server_plain);
  ASSERT_FALSE(forged);
  EXPECT_FALSE(is_plaintext_peer(forged.error().code())) << forged.error().message();
  EXPECT_FALSE(is_plaintext_peer(std::make_error_code(std::errc::connection_reset)));
  EXPECT_FALSE(is_plaintext_peer(make_error_code(Errc::peer_closed)));
}

TEST(TlsSession, TamperedRecordIsAnError) {
  Handshaken handshaken;
  Link& link = handshaken.link;
  link.server.feed_ciphertext(link.forged_record("pay 10 euros"));
  auto read = link.server.read_plaintext(link.server_plain);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().context(), "TLS session with 127.0.0.1:50000");
  EXPECT_EQ(link.server_plain.readable_bytes(), 0u);
}

// The records before a forged one authenticated: read_plaintext() fails but
// leaves their plaintext in `out`. The handshake stays done, though OpenSSL's
// SSL_is_init_finished() turns false once the fatal alert is sent: a
// connection took the failure for a failed handshake.
TEST(TlsSession, RegressionRecordsBeforeAForgedOneAreReadAndTheHandshakeStaysDone) {
  Handshaken handshaken;
  Link& link = handshaken.link;
  link.client.write_plaintext("pay 10 euros");
  const std::string good = link.client.take_ciphertext();
  link.server.feed_ciphertext(good + link.forged_record("pay 1000 euros"));
  auto read = link.server.read_plaintext(link.server_plain);
  ASSERT_FALSE(read);
  EXPECT_EQ(link.server_plain.view(), "pay 10 euros");
  EXPECT_TRUE(link.server.failed());
  EXPECT_TRUE(link.server.handshake_done());
  EXPECT_TRUE(link.server.has_ciphertext()) << "no alert for the client";
}

}  // namespace

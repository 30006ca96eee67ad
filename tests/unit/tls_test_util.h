// Certificates for the TLS tests, and contexts built on them. The
// certificates are made at test time with the openssl program (as a user
// would make them), in a temporary directory removed at exit. "server" is
// self-signed for localhost and 127.0.0.1; "other" is an unrelated
// self-signed certificate, a CA that did not sign "server". And a client
// that speaks TLS by hand, for what a well-behaved client never sends.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>

#include "tcpkit/buffer.h"
#include "tcpkit/result.h"
#include "tcpkit/tcp_stream.h"
#include "tcpkit/tls_context.h"
#include "tcpkit/tls_session.h"

namespace tcpkit::test {

class TestCerts {
 public:
  // One set per test process, made on first use.
  static const TestCerts& get() {
    static const TestCerts certs;
    return certs;
  }

  std::string cert(const std::string& name) const { return dir_ + "/" + name + ".crt"; }
  std::string key(const std::string& name) const { return dir_ + "/" + name + ".key"; }
  const std::string& dir() const { return dir_; }

  TestCerts(const TestCerts&) = delete;
  TestCerts& operator=(const TestCerts&) = delete;
  ~TestCerts() { std::filesystem::remove_all(dir_); }

 private:
  TestCerts() {
    char pattern[] = "/tmp/tcpkit-tls-test-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    if (made == nullptr) {
      ADD_FAILURE() << "mkdtemp failed";
      return;
    }
    dir_ = made;
    make("server", "localhost", "DNS:localhost,IP:127.0.0.1");
    make("other", "other.example", "DNS:other.example");
  }

  // P-256 keys: as good as RSA for these tests, and made in milliseconds.
  void make(const std::string& name, const std::string& cn, const std::string& san) {
    const std::string command =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
        " -subj /CN=" +
        cn + " -addext subjectAltName=" + san + " -keyout " + key(name) + " -out " + cert(name) +
        " 2>/dev/null";
    const int rc = std::system(command.c_str());
    if (rc != 0) ADD_FAILURE() << "could not make a test certificate: " << command;
  }

  std::string dir_;
};

// The server context of the "server" certificate, and a client context;
// a failure to build either fails the test.
inline TlsContext server_context() {
  const auto& certs = TestCerts::get();
  auto ctx = TlsContext::server(certs.cert("server"), certs.key("server"));
  EXPECT_TRUE(ctx) << ctx.error().message();
  return std::move(*ctx);
}

inline TlsContext client_context(const TlsClientOptions& options) {
  auto ctx = TlsContext::client(options);
  EXPECT_TRUE(ctx) << ctx.error().message();
  return std::move(*ctx);
}

// A client that speaks TLS by hand, a TlsSession over a plain TcpStream, so
// that it can send what a well-behaved client never would. Returns once its
// last handshake message is sent.
inline Result<TlsSession> handshake_by_hand(TcpStream& stream, const TlsContext& ctx) {
  auto session = TlsSession::create(ctx, stream.peer_endpoint().to_string());
  if (!session) return session.error();
  Buffer plain;
  while (!session->handshake_done()) {
    if (auto sent = stream.send_all(session->take_ciphertext()); !sent) return sent.error();
    char buf[4096];
    auto n = stream.recv(buf, sizeof buf);
    if (!n) return n.error();
    if (*n == 0) return Error(Errc::peer_closed, "handshake by hand");
    session->feed_ciphertext(buf, *n);
    if (auto read = session->read_plaintext(plain); !read) return read.error();
  }
  if (auto sent = stream.send_all(session->take_ciphertext()); !sent) return sent.error();
  return session;
}

}  // namespace tcpkit::test

#include "tcpkit/tls_session.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <optional>
#include <utility>

#include "openssl_error.h"
#include "tcpkit/tls_error.h"

namespace tcpkit {
namespace {

// The most one SSL_read_ex() is offered at a time: one full TLS record.
constexpr size_t kReadChunk = size_t{16} * 1024;

const std::error_code kNoMemory = std::make_error_code(std::errc::not_enough_memory);
// For a failure OpenSSL left no reason for (the peer ended the handshake).
const std::error_code kProtocolError = std::make_error_code(std::errc::protocol_error);

bool is_ip_literal(const std::string& name) {
  unsigned char address[16];
  return ::inet_pton(AF_INET, name.c_str(), address) == 1 ||
         ::inet_pton(AF_INET6, name.c_str(), address) == 1;
}

// SNI may carry only a DNS name (RFC 6066, section 3), so an address is
// checked against the certificate's IP entries and not sent.
Result<void> set_expected_name(SSL* ssl, std::string name, bool verify) {
  if (name.size() > 2 && name.front() == '[' && name.back() == ']')
    name = name.substr(1, name.size() - 2);
  const std::string context = "TLS server name '" + name + "'";
  clear_openssl_errors();
  if (is_ip_literal(name)) {
    if (verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) != 1) {
      return take_openssl_error(context, kNoMemory);
    }
    return {};
  }
  if (SSL_set_tlsext_host_name(ssl, name.c_str()) != 1)
    return take_openssl_error(context, kNoMemory);
  if (!verify) return {};
  // "*.example.com" matches one whole label, never "w*.example.com" tricks.
  SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(ssl, name.c_str()) != 1) return take_openssl_error(context, kNoMemory);
  return {};
}

}  // namespace

Result<TlsSession> TlsSession::create(const TlsContext& context, std::string peer,
                                      std::string_view server_name) {
  const std::string where = "TLS session with " + peer;
  clear_openssl_errors();
  SSL* ssl = SSL_new(context.ctx_);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  if (ssl == nullptr || in == nullptr || out == nullptr) {
    BIO_free(in);
    BIO_free(out);
    SSL_free(ssl);
    return take_openssl_error(where, kNoMemory);
  }
  // An empty input BIO means "more bytes later", never end of stream: the
  // end of the stream is the socket's business.
  BIO_set_mem_eof_return(in, -1);
  SSL_set_bio(ssl, in, out);
  TlsSession session(std::make_unique<State>(ssl, in, out, std::move(peer)));
  if (context.is_server()) {
    SSL_set_accept_state(ssl);
    return session;
  }
  SSL_set_connect_state(ssl);
  std::string name(server_name.empty() ? context.server_name() : server_name);
  if (!name.empty()) {
    if (auto set = set_expected_name(ssl, std::move(name), context.verifies_peer()); !set) {
      return set.error();
    }
  }
  // The client speaks first: this puts its hello into the output BIO.
  Buffer none;
  if (auto started = session.read_plaintext(none); !started) return started.error();
  return session;
}

// The OpenSSL objects stay out of the public header.
struct TlsSession::State {
  State(SSL* s, BIO* i, BIO* o, std::string p) : ssl(s), in(i), out(o), peer(std::move(p)) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  // SSL_free frees both BIOs too (SSL_set_bio gave them to it).
  ~State() { SSL_free(ssl); }

  SSL* ssl;
  BIO* in;   // ciphertext from the peer; owned by ssl
  BIO* out;  // ciphertext for the peer; owned by ssl
  std::string peer;
  // Plaintext written before the handshake finished.
  std::string held;
  bool shutdown_requested = false;
  bool shutdown_sent = false;
  // Kept apart from SSL_is_init_finished(), which turns false again when a
  // fatal alert is sent (OpenSSL's state machine re-enters its error state):
  // a forged record after the handshake is no handshake failure.
  bool handshake_finished = false;
  std::optional<Error> error;
};

TlsSession::TlsSession(std::unique_ptr<State> state) : s_(std::move(state)) {}
TlsSession::TlsSession(TlsSession&& other) noexcept = default;
TlsSession& TlsSession::operator=(TlsSession&& other) noexcept = default;
TlsSession::~TlsSession() = default;

void TlsSession::feed_ciphertext(const char* data, size_t len) {
  while (len > 0) {
    const int chunk = static_cast<int>(std::min<size_t>(len, INT_MAX));
    // A memory BIO grows as needed; writing to it fails only without memory.
    const int n = BIO_write(s_->in, data, chunk);
    if (n <= 0) {
      fail(Error(kNoMemory, "TLS session with " + s_->peer));
      return;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
}

Result<void> TlsSession::read_plaintext(Buffer& out) {
  if (s_->error) return *s_->error;
  if (!SSL_is_init_finished(s_->ssl)) {
    clear_openssl_errors();
    const int rc = SSL_do_handshake(s_->ssl);
    if (rc != 1) {
      const int why = SSL_get_error(s_->ssl, rc);
      if (why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE) return {};
      fail(handshake_error());
      return *s_->error;
    }
    finish_handshake();
    if (s_->error) return *s_->error;
  }
  clear_openssl_errors();
  for (;;) {
    // Nothing arrived and nothing is buffered: no need to reserve memory.
    if (BIO_ctrl_pending(s_->in) == 0 && SSL_has_pending(s_->ssl) == 0) return {};
    out.ensure_writable(kReadChunk);
    size_t n = 0;
    if (SSL_read_ex(s_->ssl, out.begin_write(), out.writable_bytes(), &n) == 1) {
      out.has_written(n);
      continue;
    }
    const int why = SSL_get_error(s_->ssl, 0);
    if (why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE) return {};
    if (why == SSL_ERROR_ZERO_RETURN) return {};  // close_notify: peer_closed() says so
    fail(take_openssl_error("TLS session with " + s_->peer, kProtocolError));
    return *s_->error;
  }
}

// A rejected certificate surfaces as SSL's generic "certificate verify
// failed"; the verdict says why (self-signed, expired, hostname mismatch).
Error TlsSession::handshake_error() {
  const std::string where = "TLS handshake with " + s_->peer;
  if (oldest_openssl_error_is(ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED)) {
    const long verdict = SSL_get_verify_result(s_->ssl);
    if (verdict != X509_V_OK) {
      clear_openssl_errors();
      return Error(std::error_code(static_cast<int>(verdict), tls_verify_category()), where);
    }
  }
  return take_openssl_error(where, kProtocolError);
}

void TlsSession::finish_handshake() {
  s_->handshake_finished = true;
  std::string held = std::exchange(s_->held, {});
  encrypt(held);
  if (s_->shutdown_requested) shutdown();
}

void TlsSession::write_plaintext(std::string_view data) {
  if (s_->error || s_->shutdown_requested || data.empty()) return;
  if (!SSL_is_init_finished(s_->ssl)) {
    s_->held.append(data);
    return;
  }
  encrypt(data);
}

void TlsSession::encrypt(std::string_view data) {
  clear_openssl_errors();
  while (!data.empty() && !s_->error) {
    size_t n = 0;
    // Memory BIOs never block and renegotiation is refused, so a write
    // fails only when the session itself is broken.
    if (SSL_write_ex(s_->ssl, data.data(), data.size(), &n) != 1) {
      fail(take_openssl_error("TLS session with " + s_->peer, kProtocolError));
      return;
    }
    data.remove_prefix(n);
  }
}

void TlsSession::take_ciphertext(Buffer& out) {
  for (size_t pending; (pending = BIO_ctrl_pending(s_->out)) > 0;) {
    const size_t chunk = std::min<size_t>(pending, INT_MAX);
    out.ensure_writable(chunk);
    const int n = BIO_read(s_->out, out.begin_write(), static_cast<int>(chunk));
    if (n <= 0) return;
    out.has_written(static_cast<size_t>(n));
  }
}

std::string TlsSession::take_ciphertext() {
  Buffer out;
  take_ciphertext(out);
  return out.retrieve_all_as_string();
}

bool TlsSession::has_ciphertext() const {
  return BIO_ctrl_pending(s_->out) > 0;
}

void TlsSession::shutdown() {
  s_->shutdown_requested = true;
  if (s_->shutdown_sent || s_->error || !SSL_is_init_finished(s_->ssl)) return;
  s_->shutdown_sent = true;
  clear_openssl_errors();
  // 0 means "sent, the peer's close_notify not seen yet": we do not wait
  // for it, as a TCP FIN does not wait for the peer's FIN.
  if (SSL_shutdown(s_->ssl) < 0) clear_openssl_errors();
}

bool TlsSession::handshake_done() const {
  return s_->handshake_finished;
}

bool TlsSession::peer_closed() const {
  return (SSL_get_shutdown(s_->ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
}

std::string_view TlsSession::protocol_version() const {
  return SSL_get_version(s_->ssl);
}

std::string_view TlsSession::cipher() const {
  return SSL_get_cipher_name(s_->ssl);
}

std::string_view TlsSession::requested_server_name() const {
  const char* name = SSL_get_servername(s_->ssl, TLSEXT_NAMETYPE_host_name);
  return name != nullptr ? name : "";
}

bool TlsSession::failed() const {
  return s_->error.has_value();
}

size_t TlsSession::held_bytes() const {
  return s_->held.size();
}

void TlsSession::fail(Error error) {
  if (!s_->error) s_->error = std::move(error);
}

}  // namespace tcpkit

#include "tcpkit/tls_context.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <utility>

#include "openssl_error.h"

namespace tcpkit {
namespace {

const std::error_code kNoMemory = std::make_error_code(std::errc::not_enough_memory);

// Settings both roles share. TLS 1.0/1.1 are deprecated (RFC 8996);
// renegotiation is refused because it is a known source of attacks and no
// modern peer needs it; released buffers keep idle connections small (the
// same promise Buffer makes).
Result<SSL_CTX*> new_context(const SSL_METHOD* method, const char* role) {
  clear_openssl_errors();
  SSL_CTX* ctx = SSL_CTX_new(method);
  if (ctx == nullptr) return take_openssl_error(std::string("TLS ") + role + " context", kNoMemory);
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

std::string quoted(const std::string& file) {
  return "'" + file + "'";
}

// OpenSSL's default for an encrypted key is to ask for its passphrase on
// the terminal, which blocks a server at its start (and prints a prompt
// into a log without one). tcpkit takes no passphrase: this callback
// refuses, and records in `userdata` (a bool, when set) that one was wanted.
int refuse_passphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* userdata) {
  if (userdata != nullptr) *static_cast<bool*>(userdata) = true;
  return 0;
}

// Why the key in `key_file` could not be used, in the words of its usual
// causes; other failures (a missing file) keep OpenSSL's oldest reason.
Error key_error(const std::string& key_file, const std::string& cert_file, bool wanted_passphrase) {
  const std::string what = "TLS private key " + quoted(key_file);
  Errc cause{};
  if (wanted_passphrase) {
    cause = Errc::tls_key_encrypted;
  } else if (oldest_openssl_error_is(ERR_LIB_X509, X509_R_KEY_VALUES_MISMATCH)) {
    cause = Errc::tls_key_mismatch;
  } else if (oldest_openssl_error_is(ERR_LIB_OSSL_DECODER, ERR_R_UNSUPPORTED) ||
             oldest_openssl_error_is(ERR_LIB_PEM, PEM_R_NO_START_LINE)) {
    cause = Errc::tls_key_not_pem;
  } else {
    return take_openssl_error(what, kNoMemory);
  }
  clear_openssl_errors();
  if (cause == Errc::tls_key_mismatch) {
    return Error(cause, what + " and certificate file " + quoted(cert_file));
  }
  return Error(cause, what);
}

}  // namespace

Result<TlsContext> TlsContext::server(const std::string& cert_file, const std::string& key_file) {
  auto made = new_context(TLS_server_method(), "server");
  if (!made) return made.error();
  // Owned from here on, so every early return frees the SSL_CTX.
  TlsContext context(*made, true);
  SSL_CTX* ctx = context.ctx_;

  SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase);
  clear_openssl_errors();
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return take_openssl_error("TLS certificate " + quoted(cert_file), kNoMemory);
  }
  bool wanted_passphrase = false;
  SSL_CTX_set_default_passwd_cb_userdata(ctx, &wanted_passphrase);
  const bool key_loaded = SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) == 1;
  SSL_CTX_set_default_passwd_cb_userdata(ctx, nullptr);
  if (!key_loaded) return key_error(key_file, cert_file, wanted_passphrase);
  if (SSL_CTX_check_private_key(ctx) != 1) return key_error(key_file, cert_file, false);
  return context;
}

Result<TlsContext> TlsContext::client(const TlsClientOptions& options) {
  auto made = new_context(TLS_client_method(), "client");
  if (!made) return made.error();
  TlsContext context(*made, false);
  context.verify_ = options.verify;
  context.server_name_ = options.server_name;
  SSL_CTX* ctx = context.ctx_;

  clear_openssl_errors();
  if (!options.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
      return take_openssl_error("TLS CA file " + quoted(options.ca_file), kNoMemory);
    }
  } else if (options.verify && SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return take_openssl_error("TLS system CA paths", kNoMemory);
  }
  // Without SSL_VERIFY_PEER OpenSSL still computes a verdict but ignores it.
  SSL_CTX_set_verify(ctx, options.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  return context;
}

TlsContext::TlsContext(TlsContext&& other) noexcept
    : ctx_(std::exchange(other.ctx_, nullptr)),
      is_server_(other.is_server_),
      verify_(other.verify_),
      server_name_(std::move(other.server_name_)) {}

TlsContext& TlsContext::operator=(TlsContext&& other) noexcept {
  if (this == &other) return *this;
  SSL_CTX_free(ctx_);
  ctx_ = std::exchange(other.ctx_, nullptr);
  is_server_ = other.is_server_;
  verify_ = other.verify_;
  server_name_ = std::move(other.server_name_);
  return *this;
}

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

}  // namespace tcpkit

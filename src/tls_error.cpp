#include "tcpkit/tls_error.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <string>

namespace tcpkit {
namespace {

class TlsCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "tls"; }
  std::string message(int ev) const override {
    const auto code = static_cast<unsigned long>(ev);
    if (const char* reason = ERR_reason_error_string(code)) return reason;
    // An unknown reason still gets OpenSSL's numeric form rather than nothing.
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    return text;
  }
};

class TlsVerifyCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "tls-verify"; }
  std::string message(int ev) const override {
    return std::string("certificate verify failed: ") + X509_verify_cert_error_string(ev);
  }
};

}  // namespace

const std::error_category& tls_category() {
  static const TlsCategory kCategory;
  return kCategory;
}

const std::error_category& tls_verify_category() {
  static const TlsVerifyCategory kCategory;
  return kCategory;
}

bool is_plaintext_peer(const std::error_code& code) {
  if (code.category() != tls_category()) return false;
  const int reason = ERR_GET_REASON(static_cast<unsigned long>(code.value()));
  return reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_UNEXPECTED_MESSAGE ||
         reason == SSL_R_PACKET_LENGTH_TOO_LONG || reason == SSL_R_RECORD_LENGTH_MISMATCH;
}

}  // namespace tcpkit

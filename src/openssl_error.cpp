#include "openssl_error.h"

#include <openssl/err.h>

#include "tcpkit/tls_error.h"

namespace tcpkit {

void clear_openssl_errors() {
  ERR_clear_error();
}

bool oldest_openssl_error_is(int lib, int reason) {
  const unsigned long first = ERR_peek_error();
  return first != 0 && !ERR_SYSTEM_ERROR(first) && ERR_GET_LIB(first) == lib &&
         ERR_GET_REASON(first) == reason;
}

Error take_openssl_error(std::string context, std::error_code fallback) {
  const unsigned long first = ERR_get_error();
  ERR_clear_error();
  if (first == 0) return Error(fallback, std::move(context));
  if (ERR_SYSTEM_ERROR(first)) {
    return Error::from_errno(static_cast<int>(ERR_GET_REASON(first)), std::move(context));
  }
  // Without the system flag OpenSSL 3 packs library (8 bits) and reason (23
  // bits) below bit 31, so the code fits an int unchanged.
  return Error(std::error_code(static_cast<int>(first), tls_category()), std::move(context));
}

}  // namespace tcpkit

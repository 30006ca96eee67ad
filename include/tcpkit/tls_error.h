/// \file
/// TLS error codes: how OpenSSL's failures become std::error_codes, so that a
/// TLS failure is an Error like any other (see result.h).
///
/// Two categories, because OpenSSL reports two kinds of failure:
/// ```
///   tls_category()         OpenSSL's own error queue (library + reason, e.g.
///                          "wrong version number", "key values mismatch");
///                          the value is OpenSSL's packed error code.
///   tls_verify_category()  why the peer's certificate was rejected; the
///                          value is an X509_V_ERR_* code and the message
///                          reads "certificate verify failed: <reason>".
/// ```
/// Failures that are really system errors (a certificate file that does not
/// exist) use std::generic_category with their errno instead. Any thread.
#pragma once

#include <system_error>

namespace tcpkit {

const std::error_category& tls_category();
const std::error_category& tls_verify_category();

/// Whether a failed handshake is what a peer that does not speak TLS causes:
/// its plaintext read as a TLS record ("wrong version number", "unexpected
/// message", a record length out of range). For a hint such as "is the
/// server speaking TLS on this port?"; false for every other code.
bool is_plaintext_peer(const std::error_code& code);

}  // namespace tcpkit

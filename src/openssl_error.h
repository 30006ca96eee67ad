// openssl_error: the only reader of OpenSSL's per-thread error queue, as
// sys.cpp is the only reader of errno.
//
// Internal (not installed). Each fallible OpenSSL call is preceded by
// clear_openssl_errors() and followed, on failure, by take_openssl_error(),
// so that no stale entry from an earlier call names the wrong cause.
#pragma once

#include <string>

#include "tcpkit/result.h"

namespace tcpkit {

void clear_openssl_errors();

// Whether the oldest queued entry is (lib, reason), left in the queue:
// e.g. SSL's "certificate verify failed", whose real cause lies elsewhere.
bool oldest_openssl_error_is(int lib, int reason);

// Turns the oldest entry of the queue into an Error with `context` and
// empties the queue. The oldest entry is the root cause: OpenSSL pushes
// "No such file or directory" first and "system lib" on top of it. With an
// empty queue the error is `fallback`.
Error take_openssl_error(std::string context, std::error_code fallback);

}  // namespace tcpkit

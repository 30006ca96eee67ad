/// \file
/// CloseReason: why a connection went down, as a type rather than as text.
///
/// A connection's close_reason() is a std::error_code (the errno value, the
/// TLS library's reason, a tcpkit Errc) that says exactly what happened;
/// close_kind() sorts it into one of the few outcomes a server counts and
/// logs. Each kind has a short label, stable across releases, for metrics
/// ("slow reader") and a human text for logs ("slow reader (output over
/// high-water mark)"), so logs and metrics agree without parsing each other.
/// Value type, any thread.
#pragma once

#include <cstdint>
#include <string_view>
#include <system_error>

namespace tcpkit {

enum class CloseReason : uint8_t {
  none,                  ///< still open
  peer_closed,           ///< the peer closed cleanly (FIN, or TLS close_notify)
  reset,                 ///< the peer reset the connection (RST, broken pipe)
  idle_timeout,          ///< nothing sent or received for the idle timeout
  handshake_timeout,     ///< a layer's handshake (TLS) did not finish in time
  tls_handshake_failed,  ///< the TLS handshake failed (not TLS, certificate refused)
  tls_error,             ///< a TLS record failed after the handshake
  message_too_large,     ///< a frame or line over the codec's limit
  slow_reader,           ///< output over the high-water mark with the close policy
  refused,               ///< not allowed, or too many connections
  bad_proxy_header,      ///< an invalid PROXY protocol header
  timed_out,             ///< a deadline of the user's (e.g. for a PROXY header)
  closed_locally,        ///< force_close(): the user or the server closed it
  aborted,               ///< abort(): closed with an RST on our side
  error,                 ///< any other system error
};

/// The kind of close an error code stands for. TLS failures are reported as
/// tls_handshake_failed here; the connection, which knows whether its
/// handshake had finished, reports tls_error where it had.
CloseReason classify_close(std::error_code code);
/// Short and stable, for metric labels: "peer closed", "slow reader".
std::string_view label(CloseReason reason);
/// For a log line: the label, with a word of explanation where it needs one.
std::string_view describe(CloseReason reason);
/// Whether this close is an error worth counting as one (not a clean close,
/// an idle timeout or our own decision).
bool is_error(CloseReason reason);

}  // namespace tcpkit

#include "tcpkit/close_reason.h"

#include "tcpkit/result.h"
#include "tcpkit/tls_error.h"

namespace tcpkit {

CloseReason classify_close(std::error_code code) {
  if (!code) return CloseReason::none;
  if (code.category() == tls_category() || code.category() == tls_verify_category()) {
    return CloseReason::tls_handshake_failed;
  }
  if (code.category() == tcpkit_category()) {
    switch (static_cast<Errc>(code.value())) {
      case Errc::peer_closed:
        return CloseReason::peer_closed;
      case Errc::idle_timeout:
        return CloseReason::idle_timeout;
      case Errc::handshake_timeout:
        return CloseReason::handshake_timeout;
      case Errc::frame_too_large:
      case Errc::line_too_long:
        return CloseReason::message_too_large;
      case Errc::high_water_mark:
        return CloseReason::slow_reader;
      case Errc::not_allowed:
      case Errc::too_many_connections:
        return CloseReason::refused;
      case Errc::bad_proxy_header:
        return CloseReason::bad_proxy_header;
      case Errc::aborted:
        return CloseReason::aborted;
      default:
        return CloseReason::error;
    }
  }
  if (code == std::errc::connection_reset || code == std::errc::broken_pipe)
    return CloseReason::reset;
  if (code == std::errc::timed_out) return CloseReason::timed_out;
  if (code == std::errc::operation_canceled) return CloseReason::closed_locally;
  return CloseReason::error;
}

std::string_view label(CloseReason reason) {
  switch (reason) {
    case CloseReason::none:
      return "open";
    case CloseReason::peer_closed:
      return "peer closed";
    case CloseReason::reset:
      return "connection reset";
    case CloseReason::idle_timeout:
      return "idle timeout";
    case CloseReason::handshake_timeout:
      return "TLS handshake timeout";
    case CloseReason::tls_handshake_failed:
      return "TLS handshake failed";
    case CloseReason::tls_error:
      return "TLS error";
    case CloseReason::message_too_large:
      return "message too large";
    case CloseReason::slow_reader:
      return "slow reader";
    case CloseReason::refused:
      return "refused";
    case CloseReason::bad_proxy_header:
      return "bad PROXY header";
    case CloseReason::timed_out:
      return "timed out";
    case CloseReason::closed_locally:
      return "closed";
    case CloseReason::aborted:
      return "aborted";
    case CloseReason::error:
      return "error";
  }
  return "error";
}

std::string_view describe(CloseReason reason) {
  switch (reason) {
    case CloseReason::slow_reader:
      return "slow reader (output over high-water mark)";
    case CloseReason::aborted:
      return "aborted (reset sent)";
    default:
      return label(reason);
  }
}

bool is_error(CloseReason reason) {
  switch (reason) {
    case CloseReason::none:
    case CloseReason::peer_closed:
    case CloseReason::idle_timeout:
    case CloseReason::closed_locally:
    case CloseReason::aborted:
      return false;
    default:
      return true;
  }
}

}  // namespace tcpkit

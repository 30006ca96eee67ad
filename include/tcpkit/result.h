/// \file
/// Result<T>: the value of a setup call, or the error that stopped it.
///
/// The library never throws. Every fallible setup call returns a Result that
/// must be inspected ([[nodiscard]]). An Error carries the std::error_code plus
/// the operation and the address it applied to, so that message() reads like
/// "connect 127.0.0.1:8888: Connection refused". Value type, any thread.
#pragma once

#include <cassert>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace tcpkit {

/// tcpkit's own error conditions, for failures that have no errno value.
enum class Errc {
  bad_address = 1,  ///< not an IPv4/IPv6 literal
  bad_port,         ///< not a number in 0..65535
  missing_port,     ///< "host" without ":port"
  bad_host,         ///< empty or malformed host part
  name_not_found,   ///< getaddrinfo found nothing
  peer_closed,      ///< recv() returned 0: the peer sent FIN
  frame_too_large,  ///< a codec frame over its limit
  line_too_long,    ///< a line over LineCodec's limit
  bad_encoding,     ///< an iconv name the system does not know
  too_many_connections,
  idle_timeout,
  high_water_mark,  ///< output buffer over the mark with the close policy
  bad_proxy_header,
  bad_prefix,         ///< a CIDR prefix length out of range or not a number
  not_allowed,        ///< the peer's address is refused by an AccessList
  handshake_timeout,  ///< a TLS handshake did not finish within its timeout
  aborted,            ///< closed on our side with an RST (TcpConnection::abort)
  tls_truncated,      ///< TLS: the peer's FIN came without its close_notify
  tls_key_encrypted,  ///< TLS: a private key that needs a passphrase (none is asked for)
  tls_key_not_pem,    ///< TLS: a private key file that holds no PEM private key
  tls_key_mismatch,   ///< TLS: the key is not the first certificate's
};

const std::error_category& tcpkit_category();
inline std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), tcpkit_category()};
}

class Error {
 public:
  Error() = default;
  Error(std::error_code code, std::string context) : code_(code), context_(std::move(context)) {}

  Error(Errc e, std::string context) : code_(make_error_code(e)), context_(std::move(context)) {}
  /// An errno value from a failed system call.
  static Error from_errno(int err, std::string context) {
    return Error(std::error_code(err, std::generic_category()), std::move(context));
  }

  const std::error_code& code() const { return code_; }
  /// What was attempted and on which address, e.g. "bind 0.0.0.0:80".
  const std::string& context() const { return context_; }
  /// "context: reason", or only the reason when there is no context.
  std::string message() const {
    if (context_.empty()) return code_.message();
    return context_ + ": " + code_.message();
  }
  /// Compares the code only: err == std::errc::connection_refused.
  bool operator==(std::errc e) const { return code_ == e; }

 private:
  std::error_code code_;
  std::string context_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace tcpkit

template <>
struct std::is_error_code_enum<tcpkit::Errc> : std::true_type {};

#include "tcpkit/result.h"

namespace tcpkit {
namespace {

class TcpkitCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "tcpkit"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::bad_address:
        return "not an IPv4 or IPv6 address";
      case Errc::bad_port:
        return "port must be a number from 0 to 65535";
      case Errc::missing_port:
        return "missing ':PORT' (write HOST:PORT, or [IPv6]:PORT)";
      case Errc::bad_host:
        return "empty or malformed host";
      case Errc::name_not_found:
        return "host name not found";
      case Errc::peer_closed:
        return "connection closed by peer";
      case Errc::frame_too_large:
        return "frame larger than the maximum size";
      case Errc::line_too_long:
        return "line longer than the maximum length";
      case Errc::bad_encoding:
        return "unknown text encoding";
      case Errc::too_many_connections:
        return "too many connections";
      case Errc::idle_timeout:
        return "idle timeout";
      case Errc::high_water_mark:
        return "peer too slow: output buffer over its high-water mark";
      case Errc::bad_proxy_header:
        return "invalid PROXY protocol header";
      case Errc::bad_prefix:
        return "prefix length must be a number from 0 to 32 (IPv4) or 0 to 128 (IPv6)";
      case Errc::not_allowed:
        return "not allowed";
      case Errc::handshake_timeout:
        return "TLS handshake timeout";
      case Errc::aborted:
        return "connection aborted (reset sent)";
      case Errc::tls_truncated:
        return "the peer closed without TLS close_notify: what it sent may be cut short";
      case Errc::tls_key_encrypted:
        return "the key is encrypted, and tcpkit takes no passphrase (decrypt it first: "
               "openssl pkey -in KEY -out KEY.plain)";
      case Errc::tls_key_not_pem:
        return "not a PEM private key (a DER key, or a certificate?)";
      case Errc::tls_key_mismatch:
        return "the key does not match the first certificate in the certificate file (the "
               "server's own certificate comes first, then its chain)";
    }
    return "unknown tcpkit error";
  }
};

}  // namespace

const std::error_category& tcpkit_category() {
  static const TcpkitCategory kCategory;
  return kCategory;
}

}  // namespace tcpkit

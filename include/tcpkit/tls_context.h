/// \file
/// TlsContext: the TLS configuration shared by many connections — one
/// OpenSSL SSL_CTX with the certificate and key (server) or the trusted CAs
/// and the name to verify (client).
///
/// The user owns it; move-only. Build it once at setup (the factories read
/// files and report what failed, e.g. "TLS certificate 'x.pem': No such file
/// or directory"), then create a TlsSession per connection. OpenSSL makes a
/// context safe to share between sessions on any number of loop threads, and
/// each session keeps its own reference, so sessions may outlive it. Only
/// TLS 1.2 and newer are offered; renegotiation is refused.
#pragma once

#include <string>

#include "tcpkit/result.h"

// OpenSSL's context, opaque here: no OpenSSL header reaches the user.
struct ssl_ctx_st;

namespace tcpkit {

struct TlsClientOptions {
  /// PEM file of the CAs to trust; empty: the system's default CA paths.
  std::string ca_file;
  /// false: accept any certificate and name (--insecure). Encrypted, but
  /// anyone in the middle can read along.
  bool verify = true;
  /// The name the server must prove: sent as SNI (unless it is an IP
  /// literal) and checked against the certificate's names and addresses.
  /// Empty: no name check, only the chain.
  std::string server_name;
};

class TlsContext {
 public:
  /// A server context presenting the PEM certificate chain in cert_file with
  /// the PEM private key in key_file.
  static Result<TlsContext> server(const std::string& cert_file, const std::string& key_file);
  static Result<TlsContext> client(const TlsClientOptions& options);

  TlsContext(TlsContext&& other) noexcept;
  TlsContext& operator=(TlsContext&& other) noexcept;
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ~TlsContext();

  bool is_server() const { return is_server_; }
  bool verifies_peer() const { return verify_; }
  /// The client's default name to verify (TlsClientOptions::server_name).
  const std::string& server_name() const { return server_name_; }

 private:
  friend class TlsSession;  // makes its sessions from ctx_
  TlsContext(ssl_ctx_st* ctx, bool is_server) : ctx_(ctx), is_server_(is_server) {}

  ssl_ctx_st* ctx_ = nullptr;
  bool is_server_ = false;
  bool verify_ = false;
  std::string server_name_;
};

}  // namespace tcpkit

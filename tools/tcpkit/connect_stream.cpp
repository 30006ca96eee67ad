#include "connect_stream.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tcpkit::cli {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadSize = 64 * 1024;

const std::error_code kNothingYet = std::make_error_code(std::errc::resource_unavailable_try_again);

int poll_readable(int fd, int timeout_ms) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, timeout_ms);
    if (rc >= 0) return rc;
    if (errno != EINTR) return -errno;
  }
}

}  // namespace

Result<void> ConnectStream::handshake(std::chrono::milliseconds timeout) {
  if (!tls_) return {};
  const std::string where = "TLS handshake with " + peer_endpoint().to_string();
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    collect_ciphertext();
    if (auto sent = send_all({}); !sent) return Error(sent.error().code(), where);
    if (tls_->handshake_done()) return {};
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    int ready = poll_readable(fd(), static_cast<int>(std::max<long long>(0, left.count())));
    if (ready < 0) return Error::from_errno(-ready, where);
    if (ready == 0) return Error(std::make_error_code(std::errc::timed_out), where);
    auto n = read_ciphertext();
    if (!n) return Error(n.error().code(), where);
    if (*n == 0) return Error(Errc::peer_closed, where);
    if (auto read = tls_->read_plaintext(plaintext_); !read) {
      // Best effort: the alert tells the server why we hang up.
      collect_ciphertext();
      (void)flush_pending();
      return read.error();
    }
  }
}

bool ConnectStream::has_buffered_input() const {
  if (!tls_) return false;
  return plaintext_.readable_bytes() > 0 || eof_ || tls_->peer_closed();
}

int ConnectStream::wait_readable(int timeout_ms) {
  if (has_buffered_input()) return 1;
  return poll_readable(fd(), timeout_ms);
}

Result<size_t> ConnectStream::recv(char* buf, size_t len) {
  if (!tls_) return stream_.recv(buf, len);
  if (plaintext_.readable_bytes() == 0 && !eof_ && !tls_->peer_closed()) {
    auto n = read_ciphertext();
    if (!n) return n.error();
    if (*n == 0) {
      eof_ = true;
    } else {
      auto read = tls_->read_plaintext(plaintext_);
      // Post-handshake messages may need an answer (a key update).
      collect_ciphertext();
      if (auto sent = send_all({}); !sent) return sent.error();
      if (!read) return read.error();
    }
  }
  if (plaintext_.readable_bytes() > 0) {
    size_t n = std::min(len, plaintext_.readable_bytes());
    std::memcpy(buf, plaintext_.peek(), n);
    plaintext_.retrieve(n);
    return n;
  }
  if (eof_ || tls_->peer_closed()) return size_t{0};
  return Error(kNothingYet, "");
}

Result<size_t> ConnectStream::read_ciphertext() {
  read_buffer_.resize(kReadSize);
  auto n = stream_.recv(read_buffer_.data(), read_buffer_.size());
  if (n && *n > 0) tls_->feed_ciphertext(read_buffer_.data(), *n);
  return n;
}

void ConnectStream::collect_ciphertext() {
  if (tls_ && tls_->has_ciphertext()) pending_ += tls_->take_ciphertext();
}

Result<void> ConnectStream::send_all(std::string_view data) {
  if (!tls_) return stream_.send_all(data);
  tls_->write_plaintext(data);
  collect_ciphertext();
  if (pending_.empty()) return {};
  auto sent = stream_.send_all(pending_);
  pending_.clear();
  return sent;
}

Result<size_t> ConnectStream::send_some(std::string_view data) {
  if (tls_) {
    if (auto flushed = flush_pending(); !flushed) return flushed.error();
    if (!pending_.empty()) return size_t{0};
    tls_->write_plaintext(data);
    collect_ciphertext();
    if (auto flushed = flush_pending(); !flushed) return flushed.error();
    return data.size();
  }
  for (;;) {
    // MSG_DONTWAIT makes this one call non-blocking; the socket stays
    // blocking for the library's other calls.
    ssize_t n = ::send(fd(), data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t{0};
    return Error::from_errno(errno, "send to " + peer_endpoint().to_string());
  }
}

Result<void> ConnectStream::flush_pending() {
  while (!pending_.empty()) {
    ssize_t n = ::send(fd(), pending_.data(), pending_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return {};
    if (n < 0) return Error::from_errno(errno, "send to " + peer_endpoint().to_string());
    pending_.erase(0, static_cast<size_t>(n));
  }
  return {};
}

Result<void> ConnectStream::shutdown_write() {
  if (tls_) {
    tls_->shutdown();
    if (auto sent = send_all({}); !sent) return sent.error();
  }
  return stream_.shutdown_write();
}

void ConnectStream::close() {
  if (tls_ && tls_->handshake_done() && !tls_->failed()) {
    tls_->shutdown();  // a no-op when shutdown_write() has sent it already
    collect_ciphertext();
    (void)flush_pending();
  }
  stream_.close();
}

}  // namespace tcpkit::cli

#include "unix_socket_file.h"

#include <sys/stat.h>

#include <cerrno>

#include "sys.h"

namespace tcpkit {

Result<bool> clear_stale_socket_file(const Endpoint& address) {
  if (!address.is_unix() || address.is_abstract()) return false;
  const std::string path = address.unix_path();
  const std::string what = "listen " + address.to_string();
  long mode = sys::file_mode(path.c_str());
  if (mode == -ENOENT) return false;
  if (mode < 0) return Error::from_errno(static_cast<int>(-mode), what);
  if (!S_ISSOCK(static_cast<mode_t>(mode))) {
    return Error::from_errno(EEXIST, what +
                                         " (the path exists and is not a socket; it is left alone: "
                                         "remove it yourself or pick another path)");
  }
  auto probe = sys::tcp_socket(AF_UNIX, /*nonblocking=*/true, address);
  if (!probe) return probe.error();
  // A Unix connect completes or fails at once; EAGAIN means the server's
  // backlog is full, which a dead server does not have either.
  int rc = sys::connect(probe->get(), address);
  if (rc == 0 || rc == -EAGAIN) {
    std::string holder = "a live server";
    if (auto who = sys::peer_credentials(probe->get()))
      holder += " (pid " + std::to_string(who->pid) + ")";
    return Error::from_errno(EADDRINUSE, what + ": " + holder + " listens there");
  }
  if (rc != -ECONNREFUSED)
    return Error::from_errno(-rc, what + " (checking the existing socket file)");
  if (auto r = sys::unlink(path.c_str()); !r) return r.error();
  return true;
}

Result<UnixSocketFile> UnixSocketFile::adopt(std::string path) {
  auto id = sys::file_id(path.c_str());
  if (!id) return id.error();
  return UnixSocketFile(std::move(path), id->first, id->second);
}

UnixSocketFile::UnixSocketFile(UnixSocketFile&& other) noexcept
    : path_(std::move(other.path_)), dev_(other.dev_), ino_(other.ino_) {
  other.path_.clear();
}

UnixSocketFile& UnixSocketFile::operator=(UnixSocketFile&& other) noexcept {
  if (this == &other) return *this;
  remove();
  path_ = std::move(other.path_);
  other.path_.clear();
  dev_ = other.dev_;
  ino_ = other.ino_;
  return *this;
}

UnixSocketFile::~UnixSocketFile() {
  remove();
}

void UnixSocketFile::remove() noexcept {
  if (path_.empty()) return;
  (void)sys::unlink_if_same(path_.c_str(), dev_, ino_);
  path_.clear();
}

}  // namespace tcpkit

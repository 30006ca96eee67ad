// UnixSocketFile: the file that bind() creates for a Unix-domain listener,
// from before the bind (a stale one in the way) to after the close (ours
// must go).
//
// Internal; owned by TcpListener. Unlike a TCP port, a Unix socket's path
// outlives its server: the file stays when the process dies, and bind() on
// it then fails with EADDRINUSE although nobody listens. The tutorial's
// "Address already in use" has the same cure in spirit as SO_REUSEADDR: a
// path whose socket refuses connections (ECONNREFUSED) belongs to a dead
// server and may be replaced; a live server's path, or anything that is not
// a socket, is never touched. Abstract sockets have no file and need none of
// this.
#pragma once

#include <sys/types.h>

#include <string>

#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"

namespace tcpkit {

// Makes `address`'s path free for bind(). Returns false when nothing was
// there, true when a stale socket file was removed; EADDRINUSE naming the
// holder's pid when a server answers there; EEXIST when the path is not a
// socket (it is left alone).
Result<bool> clear_stale_socket_file(const Endpoint& address);

class UnixSocketFile {
 public:
  // Records the file bind() just created at `path`, to remove it on
  // destruction if it is still the same file (a successor may have replaced
  // it meanwhile, and its file is not ours to remove).
  static Result<UnixSocketFile> adopt(std::string path);

  UnixSocketFile(UnixSocketFile&& other) noexcept;
  UnixSocketFile& operator=(UnixSocketFile&& other) noexcept;
  UnixSocketFile(const UnixSocketFile&) = delete;
  UnixSocketFile& operator=(const UnixSocketFile&) = delete;
  ~UnixSocketFile();

  // Leaves the file in place for good: its socket lives on elsewhere.
  void keep() { path_.clear(); }

 private:
  UnixSocketFile(std::string path, dev_t dev, ino_t ino)
      : path_(std::move(path)), dev_(dev), ino_(ino) {}
  void remove() noexcept;

  std::string path_;  // empty once moved from
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace tcpkit

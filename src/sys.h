// sys: thin wrappers over the socket and event system calls.
//
// Internal (not installed). The library's socket and file system calls go
// through here, and each wrapper turns a failure into a Result or a negative
// errno value right at the call, so no caller can read a stale errno later.
// The other readers of errno in src/ read it at once, the same way:
// poller_epoll.cpp (epoll_wait and epoll_ctl on the hot path, through
// last_errno()) and transcoder.cpp (iconv, a library call that reports
// through errno). A few calls whose failure is not looked at stay direct:
// close in unique_fd.cpp, the eventfd write in event_loop.cpp, the spare
// descriptor's open in acceptor.cpp. liburing (poller_uring.cpp) returns
// -errno itself. The program (tools/) does not use this header and reads
// errno after its own poll/read calls.
#pragma once

#include <sys/types.h>

// 1 when built under ThreadSanitizer (GCC's macro, or clang's feature test).
// It learns of descriptors and mappings only through libc's calls, which
// some wrappers here bypass otherwise (sys.cpp, buffer.cpp say where).
#if defined(__SANITIZE_THREAD__)
#define TCPKIT_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TCPKIT_THREAD_SANITIZER 1
#endif
#endif
#ifndef TCPKIT_THREAD_SANITIZER
#define TCPKIT_THREAD_SANITIZER 0
#endif

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <utility>

#include "tcpkit/endpoint.h"
#include "tcpkit/result.h"
#include "tcpkit/unique_fd.h"

struct epoll_event;
struct pollfd;

namespace tcpkit::sys {

// errno of the last failed call, for wrappers that return a plain number.
int last_errno();

// The descriptors of an EventLoop: an epoll instance and the eventfd that
// wakes it, both close-on-exec (the eventfd non-blocking). A failure names
// the call, e.g. "epoll_create1 for an event loop: Too many open files".
Result<UniqueFd> epoll_create();
Result<UniqueFd> wakeup_eventfd();

// A stream socket for `family`, close-on-exec; non-blocking when asked.
// TCP for AF_INET/AF_INET6; for AF_UNIX the kernel's one stream protocol.
Result<UniqueFd> tcp_socket(int family, bool nonblocking, const Endpoint& for_address);

Result<void> set_int_option(int fd, int level, int option, int value, const char* what);
Result<void> set_timeval_option(int fd, int option, std::chrono::milliseconds timeout,
                                const char* what);
Result<void> set_nonblocking(int fd, bool on);

Result<void> bind(int fd, const Endpoint& ep);
Result<void> listen(int fd, int backlog, const Endpoint& ep);

// accept4 with SOCK_CLOEXEC (and SOCK_NONBLOCK when asked). Returns the new
// descriptor, or -errno; the peer's address lands in `peer`. A Unix client
// rarely binds a name, so it is named by `listening_on` (sharing its path
// block, no copy) and carries its credentials.
int accept(int listen_fd, Endpoint* peer, bool nonblocking, const Endpoint& listening_on);
// Closes a descriptor (not retried on EINTR: see UniqueFd::reset).
void close(int fd);

// A non-blocking connect: 0 when connected at once, -EINPROGRESS while the
// handshake runs, another -errno on failure.
int connect(int fd, const Endpoint& ep);

// Pending error of the socket (SO_ERROR), 0 if none.
int socket_error(int fd);
// What the socket's send queue holds that the peer has not taken yet
// (SIOCOUTQ): on TCP, bytes not yet acknowledged; on a Unix socket, the
// memory of the chunks not yet wholly read (their bytes and the kernel's
// overhead, so it can exceed the bytes sent). 0 when the socket cannot say.
uint64_t bytes_not_taken_by_peer(int fd);
// Bytes waiting to be read in the socket's receive queue (SIOCINQ); 0 when
// the socket cannot say.
uint64_t bytes_to_read(int fd);
/// SO_LINGER {on, 0 s}: the close() that follows sends RST, not FIN. 0 or -errno.
int set_linger_abort(int fd);

// read/readv/send: byte count, or -errno. send uses MSG_NOSIGNAL so a closed
// peer yields -EPIPE instead of killing the process with SIGPIPE.
ssize_t read(int fd, void* buf, size_t len);
ssize_t readv(int fd, const struct iovec* iov, int count);
ssize_t send(int fd, const void* buf, size_t len);
/// send() of several pieces in order, in one call (sendmsg()).
ssize_t sendv(int fd, const struct iovec* iov, int count);
/// The same without blocking on a blocking socket (MSG_DONTWAIT): -EAGAIN when full.
ssize_t send_nonblocking(int fd, const void* buf, size_t len);
// A pipe for splice(), both ends non-blocking and close-on-exec: 0 or -errno.
int make_pipe(UniqueFd* read_end, UniqueFd* write_end);
// splice() without blocking, up to `len` bytes: the byte count, 0 at the
// end of the stream, or -errno. From a socket into a pipe; from a pipe into
// a socket, where a peer that is gone yields -EPIPE and never SIGPIPE
// (splice() takes no MSG_NOSIGNAL: the signal is held for the call, and
// taken back when the call raised it).
ssize_t splice_from_socket(int socket, int pipe_write_end, size_t len);
ssize_t splice_to_socket(int pipe_read_end, int socket, size_t len);
// epoll_wait(): the number of ready events, or -errno.
int epoll_wait(int epoll_fd, ::epoll_event* events, int max_events, int timeout_ms);
// epoll_pwait2() (Linux 5.11): the same with a timespec timeout; -ENOSYS
// where the kernel or the headers lack it.
int epoll_pwait2(int epoll_fd, ::epoll_event* events, int max_events, const ::timespec* timeout);
int shutdown_write(int fd);

// poll() `count` descriptors with a timeout (negative: forever), retrying
// EINTR within it. Returns how many are ready, 0 on timeout, -errno on failure.
int poll(struct ::pollfd* fds, size_t count, std::chrono::milliseconds timeout);
// The same for one descriptor and `events`.
int poll_one(int fd, short events, std::chrono::milliseconds timeout);

Endpoint local_endpoint(int fd);
Endpoint peer_endpoint(int fd);

// SO_PEERCRED of a connected Unix socket: the peer's pid, uid and gid as of
// its connect() or listen().
Result<PeerCredentials> peer_credentials(int fd);

// File system steps for a Unix socket path. file_mode: the st_mode of `path`
// (lstat: a symbolic link is not followed), or -errno.
long file_mode(const char* path);
// The device and inode of `path`, to recognise our own socket file later.
Result<std::pair<dev_t, ino_t>> file_id(const char* path);
Result<void> unlink(const char* path);
// Unlinks `path` only while it is still the file (dev, ino): 0, -ESTALE when
// another file took the path, or -errno. Never throws (for destructors).
int unlink_if_same(const char* path, dev_t dev, ino_t ino) noexcept;
Result<void> chmod(const char* path, unsigned mode);

}  // namespace tcpkit::sys

#include "sys.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

// Descriptors are opened and closed through syscall() where that saves
// libc's thread-cancellation toggling (accept(), close()), except under
// ThreadSanitizer: it learns of a descriptor's life only through libc's
// calls, and without them takes a reused number for a race between the
// threads that used it.
#define TCPKIT_SYS_LIBC_DESCRIPTORS TCPKIT_THREAD_SANITIZER

namespace tcpkit::sys {
namespace {

ssize_t or_errno(ssize_t rc) {
  return rc < 0 ? -errno : rc;
}

}  // namespace

int last_errno() {
  return errno;
}

Result<UniqueFd> epoll_create() {
  int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return Error::from_errno(errno, "epoll_create1 for an event loop");
  return UniqueFd(fd);
}

Result<UniqueFd> wakeup_eventfd() {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return Error::from_errno(errno, "eventfd for an event loop");
  return UniqueFd(fd);
}

Result<UniqueFd> tcp_socket(int family, bool nonblocking, const Endpoint& for_address) {
  int type = SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
  int fd = ::socket(family, type, family == AF_UNIX ? 0 : IPPROTO_TCP);
  if (fd < 0) return Error::from_errno(errno, "socket for " + for_address.to_string());
  return UniqueFd(fd);
}

Result<void> set_int_option(int fd, int level, int option, int value, const char* what) {
  if (::setsockopt(fd, level, option, &value, sizeof value) < 0) {
    return Error::from_errno(errno, std::string("setsockopt ") + what);
  }
  return {};
}

Result<void> set_timeval_option(int fd, int option, std::chrono::milliseconds timeout,
                                const char* what) {
  // A zero timeval means "no timeout" to the kernel, which is what a negative
  // timeout (kNoTimeout) asks for; passed through, it would fail with EDOM.
  if (timeout.count() < 0) timeout = std::chrono::milliseconds(0);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  if (::setsockopt(fd, SOL_SOCKET, option, &tv, sizeof tv) < 0) {
    return Error::from_errno(errno, std::string("setsockopt ") + what);
  }
  return {};
}

Result<void> set_nonblocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0) return Error::from_errno(errno, "fcntl F_GETFL");
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (::fcntl(fd, F_SETFL, flags) < 0) return Error::from_errno(errno, "fcntl F_SETFL");
  return {};
}

Result<void> bind(int fd, const Endpoint& ep) {
  if (::bind(fd, ep.sockaddr_ptr(), ep.sockaddr_len()) < 0) {
    return Error::from_errno(errno, "bind " + ep.to_string());
  }
  return {};
}

Result<void> listen(int fd, int backlog, const Endpoint& ep) {
  if (::listen(fd, backlog) < 0) return Error::from_errno(errno, "listen " + ep.to_string());
  return {};
}

int accept(int listen_fd, Endpoint* peer, bool nonblocking, const Endpoint& listening_on) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int flags = SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
  // Through syscall(), as the reads and sends below: one per connection.
#if TCPKIT_SYS_LIBC_DESCRIPTORS
  const long rc = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, flags);
#else
  const long rc = ::syscall(SYS_accept4, listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, flags);
#endif
  if (rc < 0) return -errno;
  const int fd = static_cast<int>(rc);
  if (peer == nullptr) return fd;
  *peer = Endpoint(reinterpret_cast<sockaddr*>(&ss), len);
  if (ss.ss_family != AF_UNIX) return fd;
  if (peer->unix_path().empty()) *peer = listening_on;
  if (auto who = peer_credentials(fd)) *peer = peer->with_credentials(*who);
  return fd;
}

void close(int fd) {
#if TCPKIT_SYS_LIBC_DESCRIPTORS
  ::close(fd);
#else
  ::syscall(SYS_close, fd);
#endif
}

int connect(int fd, const Endpoint& ep) {
  int rc = ::connect(fd, ep.sockaddr_ptr(), ep.sockaddr_len());
  return rc < 0 ? -errno : 0;
}

int set_linger_abort(int fd) {
  linger abort_on_close{1, 0};
  return ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close) == 0
             ? 0
             : -errno;
}

int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
  return err;
}

namespace {
uint64_t queue_size(int fd, unsigned long request) {
  int queued = 0;
  if (::ioctl(fd, request, &queued) < 0 || queued < 0) return 0;
  return static_cast<uint64_t>(queued);
}
}  // namespace

uint64_t bytes_not_taken_by_peer(int fd) {
  return queue_size(fd, SIOCOUTQ);
}

uint64_t bytes_to_read(int fd) {
  return queue_size(fd, SIOCINQ);
}

// The reads and sends of every message go to the kernel through syscall(),
// not libc's wrappers: those are thread-cancellation points, and in a
// process with more than one thread each call enables and disables
// cancellation around the system call (about 1% of `tcpkit bench`'s CPU in
// a profile). tcpkit cancels no threads, so the wrappers buy nothing.
ssize_t read(int fd, void* buf, size_t len) {
  return or_errno(::syscall(SYS_read, fd, buf, len));
}
ssize_t readv(int fd, const struct iovec* iov, int count) {
  return or_errno(::syscall(SYS_readv, fd, iov, count));
}
ssize_t send(int fd, const void* buf, size_t len) {
  return or_errno(::syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, nullptr, 0));
}
ssize_t sendv(int fd, const struct iovec* iov, int count) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(count);
  return or_errno(::syscall(SYS_sendmsg, fd, &msg, MSG_NOSIGNAL));
}
ssize_t send_nonblocking(int fd, const void* buf, size_t len) {
  return or_errno(::syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT, nullptr, 0));
}
int make_pipe(UniqueFd* read_end, UniqueFd* write_end) {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
  *read_end = UniqueFd(fds[0]);
  *write_end = UniqueFd(fds[1]);
  return 0;
}
ssize_t splice_from_socket(int socket, int pipe_write_end, size_t len) {
  return or_errno(::syscall(SYS_splice, socket, nullptr, pipe_write_end, nullptr, len,
                            SPLICE_F_MOVE | SPLICE_F_NONBLOCK));
}
ssize_t splice_to_socket(int pipe_read_end, int socket, size_t len) {
  sigset_t sigpipe;
  sigset_t old;
  sigemptyset(&sigpipe);
  sigaddset(&sigpipe, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &sigpipe, &old);
  // A SIGPIPE that was pending already (blocked by the caller) is not ours to take.
  bool pending_before = false;
  if (sigismember(&old, SIGPIPE) == 1) {
    sigset_t pending;
    pending_before = ::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
  }
  const ssize_t n = or_errno(::syscall(SYS_splice, pipe_read_end, nullptr, socket, nullptr, len,
                                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK));
  if (n == -EPIPE && !pending_before) {
    const timespec now{};
    while (::sigtimedwait(&sigpipe, nullptr, &now) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return n;
}
int epoll_wait(int epoll_fd, struct epoll_event* events, int max_events, int timeout_ms) {
  // epoll_pwait with no signal mask: the call every architecture has.
  const long rc = ::syscall(SYS_epoll_pwait, epoll_fd, events, max_events, timeout_ms, nullptr, 0);
  return rc < 0 ? -errno : static_cast<int>(rc);
}
int epoll_pwait2(int epoll_fd, struct epoll_event* events, int max_events,
                 const struct timespec* timeout) {
#ifdef SYS_epoll_pwait2
  const long rc = ::syscall(SYS_epoll_pwait2, epoll_fd, events, max_events, timeout, nullptr, 0);
  return rc < 0 ? -errno : static_cast<int>(rc);
#else
  (void)epoll_fd, (void)events, (void)max_events, (void)timeout;
  return -ENOSYS;
#endif
}
int shutdown_write(int fd) {
  return ::shutdown(fd, SHUT_WR) < 0 ? -errno : 0;
}

int poll(struct ::pollfd* fds, size_t count, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const bool forever = timeout.count() < 0;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int wait_ms = -1;
    if (!forever) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      wait_ms = static_cast<int>(std::max<long long>(0, left.count()));
    }
    int rc = ::poll(fds, count, wait_ms);
    if (rc >= 0) return rc;
    if (errno != EINTR) return -errno;
  }
}

int poll_one(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  return sys::poll(&p, 1, timeout);
}

Endpoint local_endpoint(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return Endpoint();
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6 && ss.ss_family != AF_UNIX)
    return Endpoint();
  return Endpoint(reinterpret_cast<sockaddr*>(&ss), len);
}

Endpoint peer_endpoint(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return Endpoint();
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6 && ss.ss_family != AF_UNIX)
    return Endpoint();
  return Endpoint(reinterpret_cast<sockaddr*>(&ss), len);
}

Result<PeerCredentials> peer_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    return Error::from_errno(errno, "getsockopt SO_PEERCRED");
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

long file_mode(const char* path) {
  struct stat st {};
  if (::lstat(path, &st) < 0) return -errno;
  return static_cast<long>(st.st_mode);
}

Result<std::pair<dev_t, ino_t>> file_id(const char* path) {
  struct stat st {};
  if (::lstat(path, &st) < 0) return Error::from_errno(errno, std::string("stat ") + path);
  return std::pair<dev_t, ino_t>(st.st_dev, st.st_ino);
}

int unlink_if_same(const char* path, dev_t dev, ino_t ino) noexcept {
  struct stat st {};
  if (::lstat(path, &st) < 0) return -errno;
  if (st.st_dev != dev || st.st_ino != ino) return -ESTALE;
  return ::unlink(path) < 0 ? -errno : 0;
}

Result<void> unlink(const char* path) {
  if (::unlink(path) < 0) return Error::from_errno(errno, std::string("unlink ") + path);
  return {};
}

Result<void> chmod(const char* path, unsigned mode) {
  if (::chmod(path, static_cast<mode_t>(mode)) < 0) {
    return Error::from_errno(errno, std::string("chmod ") + path);
  }
  return {};
}

}  // namespace tcpkit::sys

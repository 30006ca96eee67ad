/* Peer echo server for bench/run-all: the smallest honest epoll echo server.
 * Level-triggered, non-blocking sockets, one shared 64 KiB read buffer. What
 * is read is written straight back; if the socket is full, the remainder is
 * copied into the connection's pending buffer, reading stops (EPOLLOUT only)
 * until the pending bytes are gone, then reading resumes. Single-threaded.
 *
 * Usage: epoll_echo PORT   (listens on 127.0.0.1, prints nothing per connection) */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { kBufferSize = 64 * 1024, kMaxEvents = 1024 };

typedef struct conn {
  int fd;
  char* pending; /* unsent bytes, malloc'd only when the socket was full */
  size_t pending_len;
  size_t pending_off;
} conn;

static int epfd;
static char buffer[kBufferSize];

static void set_interest(conn* c, unsigned events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void close_conn(conn* c) {
  close(c->fd); /* also removes it from the epoll set */
  free(c->pending);
  free(c);
}

static void accept_all(int listen_fd) {
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, or EMFILE and friends: try again on the next event */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn* c = calloc(1, sizeof(conn));
    c->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  }
}

/* Returns 0 to keep the connection, -1 to close it. */
static int on_readable(conn* c) {
  ssize_t n = read(c->fd, buffer, sizeof buffer);
  if (n == 0) return -1;
  if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
  ssize_t w = write(c->fd, buffer, (size_t)n);
  if (w < 0) {
    if (errno != EAGAIN) return -1;
    w = 0;
  }
  if (w == n) return 0;
  c->pending_len = (size_t)(n - w);
  c->pending_off = 0;
  c->pending = malloc(c->pending_len);
  memcpy(c->pending, buffer + w, c->pending_len);
  set_interest(c, EPOLLOUT);
  return 0;
}

static int on_writable(conn* c) {
  ssize_t w = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
  if (w < 0) return errno == EAGAIN ? 0 : -1;
  c->pending_off += (size_t)w;
  if (c->pending_off < c->pending_len) return 0;
  free(c->pending);
  c->pending = NULL;
  set_interest(c, EPOLLIN);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  int listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[1]));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listen_fd, (struct sockaddr*)&addr, sizeof addr) < 0 || listen(listen_fd, 4096) < 0) {
    perror("epoll_echo: bind/listen");
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &lev);

  struct epoll_event events[kMaxEvents];
  for (;;) {
    int n = epoll_wait(epfd, events, kMaxEvents, -1);
    for (int i = 0; i < n; ++i) {
      conn* c = events[i].data.ptr;
      if (!c) {
        accept_all(listen_fd);
        continue;
      }
      int rc = 0;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) rc = -1;
      else if (c->pending) rc = on_writable(c);
      else rc = on_readable(c);
      if (rc < 0) close_conn(c);
    }
  }
}

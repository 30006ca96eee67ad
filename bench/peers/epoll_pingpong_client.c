/* The yardstick client for bench/run-all: a minimal single-threaded epoll
 * ping-pong client, Asio's ping-pong method. Each of CONNS connections sends
 * SIZE bytes once, then writes back every byte it reads, so SIZE bytes per
 * connection stay in flight until the time is up. Every byte read is checked
 * against what was sent (a memcmp per read, two where the read spans the end
 * of a message: what comes back is the first message over and over), so
 * that the yardstick does the work a trustworthy load generator must do. Throughput counts the bytes
 * the client read during DURATION seconds (one direction, as Asio's and
 * muduo's ping-pong clients count); messages are those bytes / SIZE.
 * `tcpkit bench --mode pingpong` must match or beat it against the same server.
 *
 * Usage: epoll_pingpong_client HOST PORT CONNS SIZE DURATION
 *          prints {"msgs_per_s":..,"mib_per_s":..,"conns":..,"size":..,"duration_s":..,
 *          "closed_early":..,"mismatched_bytes":..}; exit status 1 on either
 *        epoll_pingpong_client --hold HOST PORT CONNS
 *          opens CONNS idle connections, prints "ready N", holds them until
 *          stdin closes or SIGTERM arrives (for the memory-per-connection test)
 *
 * Connections take their source address round-robin from 127.0.0.1 ...
 * 127.0.0.16 (IP_BIND_ADDRESS_NO_PORT defers the port choice to connect()), so
 * even tens of thousands of them never run out of ephemeral ports. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { kBufferSize = 64 * 1024, kMaxEvents = 1024, kSourceAddresses = 16, kPeriod = 251 };

typedef struct conn {
  int fd;
  unsigned long long recv_pos; /* stream bytes read so far */
  char* pending;
  size_t pending_len;
  size_t pending_off;
} conn;

static int epfd;
static char buffer[kBufferSize];
static unsigned long long bytes_read;
static unsigned long long mismatched;
/* The first message (byte i is i % kPeriod, a prime, so messages of other
 * sizes differ); byte q of every connection's stream is message[q % size]. */
static char* message;
static size_t message_size;

static void check(const char* got, size_t n, unsigned long long pos) {
  while (n > 0) {
    const size_t off = (size_t)(pos % message_size);
    const size_t len = n < message_size - off ? n : message_size - off;
    if (memcmp(got, message + off, len) != 0) {
      for (size_t i = 0; i < len; ++i) mismatched += got[i] != message[off + i];
    }
    got += len;
    n -= len;
    pos += len;
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_one(const struct sockaddr_in* server, int index) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  struct sockaddr_in src;
  memset(&src, 0, sizeof src);
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)(index % kSourceAddresses));
  if (server->sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
      bind(fd, (struct sockaddr*)&src, sizeof src) < 0) {
    close(fd);
    return -1;
  }
  if (connect(fd, (const struct sockaddr*)server, sizeof *server) < 0) {
    close(fd);
    return -1;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/* Writes data (or queues what does not fit). Returns -1 on a dead socket. */
static int send_or_queue(conn* c, const char* data, size_t len) {
  ssize_t w = write(c->fd, data, len);
  if (w < 0) {
    if (errno != EAGAIN) return -1;
    w = 0;
  }
  if ((size_t)w == len) return 0;
  c->pending_len = len - (size_t)w;
  c->pending_off = 0;
  c->pending = malloc(c->pending_len);
  memcpy(c->pending, data + w, c->pending_len);
  struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
  return 0;
}

static int on_event(conn* c, unsigned events) {
  if (events & (EPOLLERR | EPOLLHUP)) return -1;
  if (c->pending) {
    ssize_t w = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
    if (w < 0) return errno == EAGAIN ? 0 : -1;
    c->pending_off += (size_t)w;
    if (c->pending_off < c->pending_len) return 0;
    free(c->pending);
    c->pending = NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
  }
  ssize_t n = read(c->fd, buffer, sizeof buffer);
  if (n == 0) return -1;
  if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
  bytes_read += (unsigned long long)n;
  check(buffer, (size_t)n, c->recv_pos);
  c->recv_pos += (unsigned long long)n;
  return send_or_queue(c, buffer, (size_t)n);
}

static int parse_server(const char* host, const char* port, struct sockaddr_in* out) {
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons((unsigned short)atoi(port));
  return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static int hold(const struct sockaddr_in* server, int conns) {
  int* fds = malloc(sizeof(int) * (size_t)conns);
  int opened = 0;
  for (int i = 0; i < conns; ++i) {
    fds[i] = connect_one(server, i);
    if (fds[i] >= 0) ++opened;
  }
  printf("ready %d\n", opened);
  fflush(stdout);
  /* Until stdin closes (the script's end of the pipe) or SIGTERM. */
  struct pollfd p = {.fd = 0, .events = POLLIN};
  while (poll(&p, 1, -1) >= 0 || errno == EINTR) {
    if (p.revents && read(0, buffer, sizeof buffer) <= 0) break;
  }
  for (int i = 0; i < conns; ++i)
    if (fds[i] >= 0) close(fds[i]);
  return opened == conns ? 0 : 1;
}

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_in server;
  if (argc == 5 && strcmp(argv[1], "--hold") == 0) {
    if (parse_server(argv[2], argv[3], &server) < 0) return 2;
    return hold(&server, atoi(argv[4]));
  }
  if (argc != 6 || parse_server(argv[1], argv[2], &server) < 0) {
    fprintf(stderr,
            "usage: %s HOST PORT CONNS SIZE DURATION\n"
            "       %s --hold HOST PORT CONNS\n",
            argv[0], argv[0]);
    return 2;
  }
  const int conns = atoi(argv[3]);
  const size_t size = (size_t)atol(argv[4]);
  const double duration = atof(argv[5]);
  if (conns <= 0 || size == 0 || duration <= 0) return 2;

  epfd = epoll_create1(EPOLL_CLOEXEC);
  conn* all = calloc((size_t)conns, sizeof(conn));
  message = malloc(size);
  message_size = size;
  for (size_t i = 0; i < size; ++i) message[i] = (char)(i % kPeriod);
  for (int i = 0; i < conns; ++i) {
    all[i].fd = connect_one(&server, i);
    if (all[i].fd < 0) {
      fprintf(stderr, "epoll_pingpong_client: connect #%d: %s\n", i, strerror(errno));
      return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &all[i]};
    epoll_ctl(epfd, EPOLL_CTL_ADD, all[i].fd, &ev);
  }

  int alive = conns;
  const double start = now_s();
  const double deadline = start + duration;
  for (int i = 0; i < conns; ++i) send_or_queue(&all[i], message, size);
  struct epoll_event events[kMaxEvents];
  double now = start;
  while (alive > 0 && (now = now_s()) < deadline) {
    int timeout_ms = (int)((deadline - now) * 1000) + 1;
    int n = epoll_wait(epfd, events, kMaxEvents, timeout_ms);
    for (int i = 0; i < n; ++i) {
      conn* c = events[i].data.ptr;
      if (c->fd >= 0 && on_event(c, events[i].events) < 0) {
        close(c->fd);
        c->fd = -1;
        --alive;
      }
    }
  }
  const double elapsed = now_s() - start;
  for (int i = 0; i < conns; ++i)
    if (all[i].fd >= 0) close(all[i].fd);
  printf("{\"msgs_per_s\":%.1f,\"mib_per_s\":%.2f,\"conns\":%d,\"size\":%zu,\"duration_s\":%.3f,"
         "\"closed_early\":%d,\"mismatched_bytes\":%llu}\n",
         (double)bytes_read / (double)size / elapsed,
         (double)bytes_read / elapsed / (1024.0 * 1024.0), conns, size, elapsed, conns - alive,
         mismatched);
  return alive == conns && mismatched == 0 ? 0 : 1;
}

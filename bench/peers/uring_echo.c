/* Peer echo server for bench/run-all: io_uring through liburing. One ring, one
 * thread. The listening socket always has one accept SQE in flight; each
 * connection owns a 64 KiB buffer and has exactly one operation in flight at a
 * time: a recv into its buffer, then a send of what arrived (re-submitted for
 * the rest after a short send), then the next recv. Because a connection never
 * has two operations queued, it can be closed and freed as soon as one fails.
 *
 * Usage: uring_echo PORT   (listens on 127.0.0.1, prints nothing per connection) */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { kBufferSize = 64 * 1024, kRingEntries = 4096 };

enum op { OP_ACCEPT, OP_RECV, OP_SEND };

typedef struct conn {
  enum op op;
  int fd;
  size_t len;  /* bytes in buf */
  size_t sent; /* of len, already sent */
  char buf[kBufferSize];
} conn;

static struct io_uring ring;
static conn acceptor = {.op = OP_ACCEPT};

/* Returns an SQE, flushing the submission queue first when it is full. */
static struct io_uring_sqe* get_sqe(void) {
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  while (!sqe) {
    io_uring_submit(&ring);
    sqe = io_uring_get_sqe(&ring);
  }
  return sqe;
}

static void queue_accept(int listen_fd) {
  struct io_uring_sqe* sqe = get_sqe();
  io_uring_prep_accept(sqe, listen_fd, NULL, NULL, 0);
  io_uring_sqe_set_data(sqe, &acceptor);
}

static void queue_recv(conn* c) {
  c->op = OP_RECV;
  struct io_uring_sqe* sqe = get_sqe();
  io_uring_prep_recv(sqe, c->fd, c->buf, kBufferSize, 0);
  io_uring_sqe_set_data(sqe, c);
}

static void queue_send(conn* c) {
  c->op = OP_SEND;
  struct io_uring_sqe* sqe = get_sqe();
  io_uring_prep_send(sqe, c->fd, c->buf + c->sent, c->len - c->sent, MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, c);
}

static void close_conn(conn* c) {
  close(c->fd);
  free(c);
}

static void on_completion(conn* c, int res, int listen_fd) {
  switch (c->op) {
    case OP_ACCEPT: {
      if (res >= 0) {
        conn* nc = malloc(sizeof(conn));
        if (!nc) {
          close(res);
        } else {
          int one = 1;
          setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          nc->fd = res;
          queue_recv(nc);
        }
      }
      queue_accept(listen_fd);
      return;
    }
    case OP_RECV:
      if (res <= 0) {
        close_conn(c);
        return;
      }
      c->len = (size_t)res;
      c->sent = 0;
      queue_send(c);
      return;
    case OP_SEND:
      if (res < 0) {
        close_conn(c);
        return;
      }
      c->sent += (size_t)res;
      if (c->sent < c->len)
        queue_send(c); /* short send: the rest */
      else
        queue_recv(c);
      return;
  }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  int listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[1]));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listen_fd, (struct sockaddr*)&addr, sizeof addr) < 0 || listen(listen_fd, 4096) < 0) {
    perror("uring_echo: bind/listen");
    return 1;
  }

  /* A large completion queue: with thousands of connections each may complete
   * an operation between two waits. */
  struct io_uring_params params;
  memset(&params, 0, sizeof params);
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = 8 * kRingEntries;
  int r = io_uring_queue_init_params(kRingEntries, &ring, &params);
  if (r < 0) {
    fprintf(stderr, "uring_echo: io_uring_queue_init: %s\n", strerror(-r));
    return 1;
  }

  queue_accept(listen_fd);
  for (;;) {
    r = io_uring_submit_and_wait(&ring, 1);
    if (r < 0 && r != -EINTR) {
      fprintf(stderr, "uring_echo: io_uring_submit_and_wait: %s\n", strerror(-r));
      return 1;
    }
    struct io_uring_cqe* cqe;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      on_completion(io_uring_cqe_get_data(cqe), cqe->res, listen_fd);
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
  }
}

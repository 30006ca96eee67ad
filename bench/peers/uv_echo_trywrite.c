/* Peer echo server for bench/run-all: libuv tuned the way experienced users tune
 * it. Every read lands in one shared 64 KiB buffer (the loop is single-threaded
 * and the bytes are consumed before the next read); uv_try_write sends what it
 * can at once, and only the rest is copied into a malloc'd buffer and queued
 * with uv_write. uv_try_write refuses while earlier writes are queued, so bytes
 * stay in order.
 *
 * Usage: uv_echo_trywrite PORT   (listens on 127.0.0.1, prints nothing per connection) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
  uv_write_t req;
  char data[]; /* the unsent rest, copied */
} write_req_t;

static uv_loop_t* loop;
static char read_buffer[64 * 1024];

static void alloc_buffer(uv_handle_t* handle, size_t suggested_size, uv_buf_t* buf) {
  (void)handle;
  (void)suggested_size;
  *buf = uv_buf_init(read_buffer, sizeof read_buffer);
}

static void on_close(uv_handle_t* handle) { free(handle); }

static void close_client(uv_stream_t* client) {
  if (!uv_is_closing((uv_handle_t*)client)) uv_close((uv_handle_t*)client, on_close);
}

static void on_write(uv_write_t* req, int status) {
  if (status < 0) close_client(req->handle);
  free(req);
}

static void on_read(uv_stream_t* client, ssize_t nread, const uv_buf_t* buf) {
  if (nread < 0) {
    close_client(client);
    return;
  }
  if (nread == 0) return; /* EAGAIN */
  uv_buf_t out = uv_buf_init(buf->base, (unsigned int)nread);
  int sent = uv_try_write(client, &out, 1);
  if (sent == UV_EAGAIN) sent = 0;
  if (sent < 0) {
    close_client(client);
    return;
  }
  if (sent == nread) return;
  size_t rest = (size_t)nread - (size_t)sent;
  write_req_t* wr = malloc(sizeof(write_req_t) + rest);
  memcpy(wr->data, buf->base + sent, rest);
  uv_buf_t queued = uv_buf_init(wr->data, (unsigned int)rest);
  if (uv_write(&wr->req, client, &queued, 1, on_write) != 0) {
    free(wr);
    close_client(client);
  }
}

static void on_new_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  uv_tcp_t* client = malloc(sizeof(uv_tcp_t));
  uv_tcp_init(loop, client);
  if (uv_accept(server, (uv_stream_t*)client) != 0) {
    uv_close((uv_handle_t*)client, on_close);
    return;
  }
  uv_tcp_nodelay(client, 1);
  uv_read_start((uv_stream_t*)client, alloc_buffer, on_read);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a peer that vanished must not kill the server */
  loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  uv_tcp_bind(&server, (const struct sockaddr*)&addr, 0);
  int r = uv_listen((uv_stream_t*)&server, 4096, on_new_connection);
  if (r) {
    fprintf(stderr, "uv_echo_trywrite: listen: %s\n", uv_strerror(r));
    return 1;
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}

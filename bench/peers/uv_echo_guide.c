/* Peer echo server for bench/run-all: libuv the way its guide teaches it.
 * alloc_cb mallocs a fresh buffer for every read; the read callback hands that
 * buffer to a malloc'd write request and uv_write; the write callback frees both.
 * Single-threaded.
 *
 * Usage: uv_echo_guide PORT   (listens on 127.0.0.1, prints nothing per connection) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_write_t req;
  uv_buf_t buf;
} write_req_t;

static uv_loop_t* loop;

static void alloc_buffer(uv_handle_t* handle, size_t suggested_size, uv_buf_t* buf) {
  (void)handle;
  buf->base = malloc(suggested_size);
  buf->len = suggested_size;
}

static void on_close(uv_handle_t* handle) { free(handle); }

static void on_write(uv_write_t* req, int status) {
  write_req_t* wr = (write_req_t*)req;
  if (status < 0 && !uv_is_closing((uv_handle_t*)req->handle))
    uv_close((uv_handle_t*)req->handle, on_close);
  free(wr->buf.base);
  free(wr);
}

static void on_read(uv_stream_t* client, ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    write_req_t* wr = malloc(sizeof(write_req_t));
    wr->buf = uv_buf_init(buf->base, (unsigned int)nread);
    uv_write(&wr->req, client, &wr->buf, 1, on_write);
    return;
  }
  if (nread < 0 && !uv_is_closing((uv_handle_t*)client))
    uv_close((uv_handle_t*)client, on_close);
  free(buf->base);
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
    fprintf(stderr, "uv_echo_guide: listen: %s\n", uv_strerror(r));
    return 1;
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}

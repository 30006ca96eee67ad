/* Peer echo server for bench/run-all: libevent 2 with bufferevents, as its
 * users write one. The read callback moves the whole input buffer to the
 * output buffer with evbuffer_add_buffer (no copy of the bytes: the chains
 * move); the event callback frees the bufferevent on EOF or error.
 * Single-threaded.
 *
 * Usage: event_echo PORT   (listens on 127.0.0.1, prints nothing per connection) */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void echo_read_cb(struct bufferevent* bev, void* ctx) {
  (void)ctx;
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void echo_event_cb(struct bufferevent* bev, short events, void* ctx) {
  (void)ctx;
  if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

static void accept_conn_cb(struct evconnlistener* listener, evutil_socket_t fd,
                           struct sockaddr* address, int socklen, void* ctx) {
  (void)address;
  (void)socklen;
  (void)ctx;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct event_base* base = evconnlistener_get_base(listener);
  struct bufferevent* bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(bev, echo_read_cb, NULL, echo_event_cb, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a peer that vanished must not kill the server */
  struct event_base* base = event_base_new();
  if (!base) {
    fprintf(stderr, "event_echo: event_base_new failed\n");
    return 1;
  }
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((unsigned short)atoi(argv[1]));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct evconnlistener* listener =
      evconnlistener_new_bind(base, accept_conn_cb, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                              4096, (struct sockaddr*)&sin, sizeof sin);
  if (!listener) {
    perror("event_echo: listen");
    return 1;
  }
  event_base_dispatch(base);
  evconnlistener_free(listener);
  event_base_free(base);
  return 0;
}

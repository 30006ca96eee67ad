// ModeHandler: the last stage of a `tcpkit serve` connection, which serves
// its bytes in the --mode asked for (ack, echo, discard, chat), once the
// earlier stages (PROXY header, TLS) have handed it on.
//
// Owned by ServeApp, shared by every I/O loop: a mode's own shared state
// (the chat room) is safe across them, and what is one connection's lives in
// its ServeSession. message_callback() is taken once, so that a message
// costs one indirect call into the mode, as a plain std::function would.
#pragma once

#include <memory>
#include <string>

#include "serve/serve_options.h"
#include "tcpkit/callbacks.h"

namespace tcpkit::cli {

class ServeObserver;
struct ServeSession;

class ModeHandler {
 public:
  virtual ~ModeHandler() = default;

  // The connections' message callback; it counts what it reads and sends
  // in the observer.
  virtual MessageCallback message_callback() = 0;
  // Whether every connection needs a ServeSession for this mode (the ack
  // log's decoder), and what the mode keeps in a new one.
  virtual bool keeps_session() const { return false; }
  virtual void open_session(ServeSession& /*session*/) {}
  // The client's address is known and it is to be served (chat: it joins).
  virtual void admitted(const TcpConnectionPtr& /*conn*/) {}
  // The server is stopping: the connection is shut down (FIN) right after
  // this, in its loop (chat: the member is told).
  virtual void draining(const TcpConnectionPtr& /*conn*/) {}
  // The connection is gone (chat: it leaves).
  virtual void closed(const TcpConnectionPtr& /*conn*/) {}
  // The client's name on the status page, in UTF-8; "" outside chat.
  virtual std::string client_name(const TcpConnectionPtr& /*conn*/) const { return {}; }
};

// RFC 862: every read goes back unchanged. Each read is one message here,
// whatever the framing: an echo server does not look inside the bytes.
// After the first message the connection echoes by itself, a bulk peer
// inside the kernel where `splice` (--splice) says so.
class EchoMode final : public ModeHandler {
 public:
  EchoMode(ServeObserver& observer, EchoSplice splice) : observer_(&observer), splice_(splice) {}
  MessageCallback message_callback() override;

 private:
  ServeObserver* observer_;
  EchoSplice splice_;
};

// RFC 863: every byte is dropped.
class DiscardMode final : public ModeHandler {
 public:
  explicit DiscardMode(ServeObserver& observer) : observer_(&observer) {}
  MessageCallback message_callback() override;

 private:
  ServeObserver* observer_;
};

}  // namespace tcpkit::cli

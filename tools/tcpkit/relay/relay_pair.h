// RelayPair: one client of `tcpkit relay` and its upstream connection, with
// the bytes between them forwarded both ways and the faults injected.
//
// Created by RelayApp when the client is accepted, and used only in the loop
// thread that owns the client; the upstream TcpClient runs on that same loop,
// so both connections, the queues and the timers need no locks. The client's
// context slot and RelayApp's registry hold it; it holds both connections
// until both are closed, then lets go of them (finish()).
//
// Each direction is a Flow: bytes read from its source wait in a queue (only
// while shaping or while the upstream is still connecting), then go to its
// sink. The source is paused while the queue plus the sink's output buffer
// hold more than kHighWater bytes, and resumed below kLowWater, so a slow
// reader on one side bounds memory instead of growing it. A FIN from the
// source becomes shutdown() of the sink once everything before it is sent.
//
// Either side may speak TLS (--tls-cert for clients, --to-tls upstream): the
// TLS layer is inside that side's connection, so the pair sees plaintext,
// close_notify as a FIN (a FIN without it too, which the log line names as
// a possible truncation), and a failed handshake as a close with its reason;
// bytes held for a pending handshake count in the side's output, which is
// what the pair's backpressure watches.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <system_error>

#include "relay/pair_toxics.h"
#include "relay/relay_options.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/tcp_client.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {

// Connection options for both sides of every pair.
ConnectionOptions relay_connection_options(const RelayOptions& options);

class RelayPair : public std::enable_shared_from_this<RelayPair> {
 public:
  // Above this many bytes waiting for one side, the other side is paused.
  static constexpr size_t kHighWater = size_t{1024} * 1024;
  static constexpr size_t kLowWater = size_t{256} * 1024;

  struct Hooks {
    std::function<void(const RelayPair&)> on_connected;                  // upstream is up
    std::function<void(const std::shared_ptr<RelayPair>&)> on_finished;  // both sides closed
  };

  // `sequence` numbers the proxy's clients from 0 (seeds toxics);
  // `toxics` is the proxy's list of toxics at accept time (may be null).
  RelayPair(const RelayOptions& options, const TcpConnectionPtr& client, Hooks hooks,
            uint64_t sequence = 0, ToxicListPtr toxics = nullptr);
  ~RelayPair();
  RelayPair(const RelayPair&) = delete;
  RelayPair& operator=(const RelayPair&) = delete;

  // Starts connecting upstream.
  void start();
  // The client connection's events, forwarded by RelayApp.
  void client_message(Buffer& in);
  void client_peer_closed();
  void client_write_complete();
  void client_closed();

  // The relay, or the pair's proxy, is stopping: that, rather than the
  // drain deadline, is why the pair ends ("relay stopping", "proxy
  // deleted"). Loop thread.
  void note_stopping(std::string why) { set_reason(std::move(why)); }
  // The proxy's toxics changed: they act on this live connection from
  // now on. Loop thread.
  void set_toxics(const ToxicListPtr& toxics);

  EventLoop* loop() const { return loop_; }
  const std::string& peer() const { return peer_; }
  const std::string& upstream() const { return upstream_name_; }
  // Why the pair ended: the first event that ended it.
  const std::string& reason() const { return reason_; }
  uint64_t bytes_up() const { return up_.forwarded; }
  uint64_t bytes_down() const { return down_.forwarded; }

 private:
  using Clock = EventLoop::Clock;
  enum class Upstream { connecting, connected, closed };

  static constexpr uint64_t kNoLimit = UINT64_MAX;
  // The longest any data waits: delays add up (64 toxics of 2^40 ms each),
  // and their sum in the clock's nanoseconds must not overflow.
  static constexpr std::chrono::milliseconds kMaxDelay{kMaxToxicCount};

  struct Chunk {
    std::string data;
    size_t offset;  // what pump() has sent of it
    Clock::time_point due;
    // What the due time was made of, so that a change to the toxics can
    // work it out again (retime()): when it was read, the flags' delay and
    // jitter, and a frame toxic's delay.
    Clock::time_point read_at;
    std::chrono::milliseconds flag_wait;
    std::chrono::milliseconds frame_wait;
  };
  // One end of the pair.
  using Side = TcpConnectionPtr;
  struct Flow {
    Flow(Side* from, Side* to, Stream s) : source(from), sink(to), stream(s) {}
    Side* source;
    Side* sink;
    std::deque<Chunk> queue;
    size_t queued = 0;
    Clock::time_point last_due;     // chunks leave in order, never before this
    Clock::time_point not_before;   // --rate / --chunk: the next piece may leave then
    Clock::time_point slice_until;  // a slicer toxic's pause: the same
    TimerId timer = 0;
    bool eof = false;     // the source sent FIN
    bool shut = false;    // we passed it on
    bool paused = false;  // we paused the source
    Stream stream;
    TimerId close_timer = 0;  // slow_close: the FIN waits for it
    uint64_t forwarded = 0;
  };

  void upstream_connected(const TcpConnectionPtr& conn);
  void upstream_failed(const Error& error);
  void upstream_closed(const TcpConnectionPtr& conn);
  void side_closed(const Side& closed, Side& other, bool other_done, const char* who);

  void receive(Flow& flow, Buffer& in);
  void enqueue(Flow& flow, std::string_view data, std::chrono::milliseconds extra = {});
  void pump(Flow& flow);
  // The toxics changed: what waits leaves when the toxics in place now say.
  void retime(Flow& flow);
  void arm_timer(Flow& flow, Clock::time_point when);
  void forward(Flow& flow, std::string_view data);
  void source_eof(Flow& flow);
  void check_pressure(Flow& flow);
  void maybe_resume(Flow& flow);
  size_t waiting(const Flow& flow) const;
  // Bytes on their way keep sides from idling (TcpConnection::keep_from_idling()).
  void hold_idle_while_on_the_way();

  uint64_t fault_limit() const;
  void check_fault();
  void end_forwarding();
  void set_reason(std::string reason);
  void maybe_finish();
  bool shaping(const Flow& flow) const;
  // The next read's wait: --delay, --jitter and latency toxics, at most kMaxDelay.
  std::chrono::milliseconds next_delay(Flow& flow);
  // The flags' part of it: --delay and --jitter.
  std::chrono::milliseconds flag_delay();
  // A chunk's due time, from when it was read and what it waits for.
  Clock::time_point due_time(Flow& flow, const Chunk& chunk);
  size_t piece_size(Flow& flow);
  uint64_t rate(const Flow& flow) const;
  void pass_fin(Flow& flow);
  // A timer for each toxic that ends the connection after its time.
  void arm_deadlines(const std::vector<PairToxics::Deadline>& deadlines);
  void toxic_deadline(const PairToxics::Deadline& deadline);
  void end_pair(bool reset, std::string reason);
  // An RST to a side that is still open.
  static void reset_side(const Side& side);

  const RelayOptions& options_;
  EventLoop* loop_;
  Hooks hooks_;
  const std::string peer_;
  std::string upstream_name_;
  std::string reason_;
  std::string first_fin_;  // "client" or "upstream": who sent FIN first
  // "client" or "upstream": the first side whose TLS FIN came without its
  // close_notify (TcpConnection::tls_truncated()), if any.
  std::string truncated_;
  Side client_;
  Side upstream_;
  std::unique_ptr<TcpClient> connector_;
  ToxicListPtr initial_toxics_;
  Upstream upstream_state_ = Upstream::connecting;
  bool client_gone_ = false;
  bool ending_ = false;  // a fault fired or a side failed: input is dropped from now on
  bool finished_ = false;
  bool client_held_ = false;    // hold_idle_while_on_the_way() keeps the side from idling
  bool upstream_held_ = false;  // ...
  TimerId linger_timer_ = 0;
  Flow up_{&client_, &upstream_, Stream::upstream};      // client -> upstream
  Flow down_{&upstream_, &client_, Stream::downstream};  // upstream -> client
  std::minstd_rand rng_;
  PairToxics toxics_;
  std::map<std::string, TimerId> toxic_timers_;  // timeout, reset_peer, unplug
};

}  // namespace tcpkit::cli

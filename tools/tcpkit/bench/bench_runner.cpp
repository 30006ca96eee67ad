#include "bench/bench_runner.h"

#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/cli_common.h"
#include "tcpkit/buffer.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/event_loop_thread.h"
#include "tcpkit/tcp_client.h"
#include "tcpkit/tcp_connection.h"
#include "tcpkit/tls_error.h"

namespace tcpkit::cli {
namespace {

using Clock = std::chrono::steady_clock;

// A ping-pong connection carries one endless stream whose byte at position
// p is pattern[p % kPatternPeriod], the pattern repeating with that period;
// message k is the stream's bytes [k * size, (k + 1) * size). Any piece of
// the stream is one contiguous run of the pattern buffer, so it is sent and
// checked in one call, however the kernel splits it; a lost, repeated or
// reordered piece shows unless its length is a multiple of the period, a
// prime.
constexpr size_t kPatternPeriod = 251;

// The pattern, laid out so that a run of the stream can be had at an
// address with any offset within a cache line: the period repeats
// kLine times beyond a message, and since it is prime to kLine, the stream's
// position p sits at p % period + j * period for every j < kLine, one for
// each offset. A check compares against the copy at the received bytes'
// own offset, so that memcmp reads both sides alike (about a sixth less
// memcmp time per message at 100 x 64 KiB than with any offset, perf);
// sends start on a line.
class Pattern {
 public:
  explicit Pattern(size_t size) : run_(size), bytes_(size + kPatternPeriod * kLine, '\0') {
    for (size_t i = 0; i < bytes_.size(); ++i) {
      const size_t j = i % kPatternPeriod;
      bytes_[i] = static_cast<char>('a' + j % 26 + (j / 26) % 7);
    }
  }
  // The stream's bytes from position `pos` on, at an address whose offset
  // in its cache line is that of `like`; run() of them, at least.
  const char* at(uint64_t pos, const void* like = nullptr) const {
    const char* first = bytes_.data() + pos % kPatternPeriod;
    const size_t have = reinterpret_cast<uintptr_t>(first) % kLine;
    const size_t want = reinterpret_cast<uintptr_t>(like) % kLine;
    // (have + j * period) % kLine == want; kInverse * period % kLine == 1.
    const size_t j = (want + kLine - have) % kLine * kInverse % kLine;
    return first + j * kPatternPeriod;
  }
  // The stream's byte at position `pos`.
  char byte(uint64_t pos) const { return bytes_[pos % kPatternPeriod]; }
  static constexpr size_t period() { return kPatternPeriod; }
  // One message: a longer piece (several messages read at once, in an open
  // loop) is checked a message's length at a time.
  size_t run() const { return run_; }

 private:
  static constexpr size_t kLine = 64;
  static constexpr size_t kInverse = 51;
  static_assert(kInverse * kPatternPeriod % kLine == 1);

  size_t run_;
  std::string bytes_;
};

// Messages that end in the stream range (from, to]: how many multiples of
// `size` it holds.
uint64_t boundaries_in(uint64_t from, uint64_t to, uint64_t size) {
  return to / size - from / size;
}

uint64_t nanos_between(Clock::time_point a, Clock::time_point b) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

// A counter that only its worker's thread writes and the main thread reads:
// a plain load and store, no locked read-modify-write per message.
void add(std::atomic<uint64_t>& counter, uint64_t n) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

size_t count_mismatches(const char* got, const char* want, size_t n) {
  if (std::memcmp(got, want, n) == 0) return 0;
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += got[i] != want[i];
  return bad;
}

// Where `got` (the received bytes from stream position `pos` on, of which
// the first differs from the stream) went wrong. A server that drops or
// repeats bytes shifts everything after them: when the rest of the piece
// is the stream from some other place on, the shift says by how much. The
// pattern repeats every period bytes, so a shift is known modulo the
// period, and only a long enough run tells (any 96 bytes of the pattern
// occur once in a period; 128 are asked for).
Mismatch describe_mismatch(const Pattern& pattern, uint64_t pos, const char* got, size_t n) {
  Mismatch m;
  m.offset = pos;
  m.expected = static_cast<unsigned char>(pattern.byte(pos));
  m.got = static_cast<unsigned char>(got[0]);
  constexpr size_t kRun = 128;
  if (n < kRun) return m;
  const int period = static_cast<int>(Pattern::period());
  for (int d = 1; d < period; ++d) {
    bool same = true;
    for (size_t i = 0; i < kRun && same; ++i) same = got[i] == pattern.byte(pos + d + i);
    if (same) {
      m.shift = d <= period / 2 ? d : d - period;
      break;
    }
  }
  return m;
}

// When each message in flight started, oldest first: a ring that holds
// two in the object itself, as many as a ping-pong connection ever has in
// flight, and moves to the heap for open-loop runs (--rate), which may
// hold many. Inline, they share their connection's Flight line: with a
// thousand connections, each event finds its connection's state out of
// the cache, and every line costs a miss.
class StartTimes {
 public:
  void push(Clock::time_point t) {
    if (size_ == capacity_) grow();
    data()[(head_ + size_) & (capacity_ - 1)] = t;
    ++size_;
  }
  Clock::time_point front() const { return data()[head_]; }
  uint32_t size() const { return size_; }
  void pop() {
    head_ = (head_ + 1) & (capacity_ - 1);
    --size_;
  }

 private:
  Clock::time_point* data() { return heap_ ? heap_.get() : inline_; }
  const Clock::time_point* data() const { return heap_ ? heap_.get() : inline_; }
  void grow() {
    auto bigger = std::make_unique<Clock::time_point[]>(size_t{capacity_} * 2);
    for (uint32_t i = 0; i < size_; ++i) bigger[i] = data()[(head_ + i) & (capacity_ - 1)];
    heap_ = std::move(bigger);
    head_ = 0;
    capacity_ *= 2;
  }

  Clock::time_point inline_[2];
  std::unique_ptr<Clock::time_point[]> heap_;
  uint32_t head_ = 0;
  uint32_t size_ = 0;
  uint32_t capacity_ = 2;  // a power of two
};

}  // namespace

// What every ping-pong reply touches, in one cache line: the connection's
// context (TcpConnection::set_context), whose line each event on it asks
// for as it starts, so that the reply finds it loaded.
struct alignas(64) Flight {
  uint64_t send_pos = 0;  // stream bytes sent so far
  uint64_t recv_pos = 0;  // ...and received back
  StartTimes sent_at;     // when each message in flight started
};

// One client's state; lives in its worker's loop thread.
struct Slot {
  int index = 0;       // the connection's number over all threads
  bool ready = false;  // connected, and the TLS handshake done where there is one
  TcpConnectionPtr conn;
  std::unique_ptr<TcpClient> client;
  size_t received = 0;  // connrate: the echo came back
  // Open loop: message k of this connection is due at paced_from + k
  // intervals; `paced` of them are done (sent, or missed).
  Clock::time_point paced_from;
  uint64_t paced = 0;
  Clock::time_point connect_started;
  // Stream: when the message now being sent was queued, how many the
  // server has taken all of, and both counts halfway through the window.
  Clock::time_point queued_at;
  uint64_t taken = 0;
  uint64_t taken_halfway = 0;
  size_t unsent_halfway = 0;
  bool halfway = false;
};

// Worker 0 runs on the main thread's loop, beside the run's own timers;
// each further one (--threads) on a loop thread of its own. One thread for
// --threads 1 keeps the process's descriptor table its own: the kernel then
// takes no reference on a socket's file for each read and send.
struct Worker {
  const BenchOptions* opt = nullptr;
  Endpoint target;
  const Pattern* pattern = nullptr;
  int conn_count = 0;
  int first_index = 0;  // the number of this worker's first connection
  EventLoop* loop = nullptr;
  std::unique_ptr<EventLoopThread> thread;  // null for worker 0
  std::vector<std::unique_ptr<Slot>> slots;
  TimerId ticker = 0;

  // Read live by the main thread.
  std::atomic<uint64_t> messages{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<int> connected{0};
  // Connections that are up or have failed to come up, each counted once:
  // the connect phase ends when they are all settled.
  std::atomic<int> settled{0};
  std::atomic<bool> measuring{false};
  std::atomic<bool> stopping{false};

  // Loop thread only; read by the main thread after join().
  uint64_t mismatched = 0, lost = 0, refused = 0, reset = 0, connect_failed = 0, tls_failed = 0;
  uint64_t missed = 0;
  uint64_t unanswered = 0;
  Clock::duration oldest_unanswered{};
  std::string tls_error, connect_error, close_error;
  std::optional<Mismatch> first_mismatch;
  LatencyHistogram latency;
  EventLoop::Clock::duration busy_poll_idle{};

  // Worker 0: on `main`, the calling thread's loop. The others: start a
  // loop thread with `backend`. No connection yet: launch() starts them,
  // once every loop is up.
  Result<void> start(EventLoop* main, IoBackend backend);
  void launch();
  void begin();
  // Ends the worker: the pingpong messages sent by `window_end` and not yet
  // answered are counted, and their ages recorded, before the clients close.
  void finish(Clock::time_point window_end);
  void count_unanswered(Clock::time_point window_end);
  void count_untaken(Clock::time_point window_end);
  // Stream: notes each connection's progress halfway through the window.
  void note_halfway();
  void start_client(Slot* slot);
  void on_up(Slot* slot, const TcpConnectionPtr& conn);
  // Connected, and with --tls the handshake done: the mode's traffic starts.
  void on_ready(Slot* slot);
  void handshake_failed(const TcpConnectionPtr& conn);
  // Keeps why the first connection that closed mid-run (or, connrate,
  // before its echo) closed.
  void note_close(const TcpConnectionPtr& conn);
  void on_down(Slot* slot, const TcpConnectionPtr& conn);
  void on_data(Slot* slot, TcpConnection& conn, Buffer& in);
  void on_pingpong_data(Slot* slot, TcpConnection& conn, Buffer& in);
  void on_connrate_data(Slot* slot, Buffer& in);
  void send_message(Slot* slot, Clock::time_point when);
  // Open loop: how many more messages `slot` may take now.
  uint64_t room(const Slot* slot) const;
  // Open loop: messages `slot->paced` on, `count` of them, in one send.
  void send_due(Slot* slot, uint64_t count, double step_ns);
  void note_mismatch(const Slot* slot, const Mismatch& m);
  // The next `n` bytes of `conn`'s stream (`flight` is its context);
  // messages starting in them started at `when`.
  void send_stream(Flight& flight, TcpConnection& conn, size_t n, Clock::time_point when);
  void tick();
  // Open loop: nanoseconds between two messages of one connection.
  double interval_ns() const { return 1e9 * static_cast<double>(opt->conns) / opt->rate; }
};

Result<void> Worker::start(EventLoop* main, IoBackend backend) {
  if (main != nullptr) {
    loop = main;
  } else {
    thread = std::make_unique<EventLoopThread>(backend);
    if (auto r = thread->start(); !r) return r;
    loop = thread->loop();
  }
  return {};
}

void Worker::launch() {
  loop->run_in_loop([this] { begin(); });
}

void Worker::begin() {
  loop->set_busy_poll(std::chrono::microseconds(opt->busy_poll_us));
  for (int i = 0; i < conn_count; ++i) {
    slots.push_back(std::make_unique<Slot>());
    slots.back()->index = first_index + i;
    start_client(slots.back().get());
  }
  // Open loop: a 1 ms ticker sends what is due on every connection.
  if (opt->rate > 0 && opt->mode == BenchMode::pingpong) {
    ticker = loop->run_every(std::chrono::milliseconds(1), [this] { tick(); });
  }
}

void Worker::finish(Clock::time_point window_end) {
  stopping = true;
  if (opt->mode == BenchMode::pingpong) count_unanswered(window_end);
  if (opt->mode == BenchMode::stream) count_untaken(window_end);
  if (ticker != 0) loop->cancel(ticker);
  for (auto& slot : slots) slot->client.reset();
  slots.clear();
  busy_poll_idle = loop->busy_poll_idle();
  loop->quit();
}

// A message still in flight when the window ended took at least its age
// to come back: that lower bound is its round trip here. Without it, a
// server that stopped answering would leave only the quick replies from
// before the stall in the percentiles, as if nothing had happened.
void Worker::count_unanswered(Clock::time_point window_end) {
  for (auto& slot : slots) {
    if (!slot->ready || !slot->conn) continue;
    Flight* flight = slot->conn->context<Flight>();
    if (flight == nullptr) continue;
    for (; flight->sent_at.size() > 0; flight->sent_at.pop()) {
      const Clock::time_point sent = flight->sent_at.front();
      if (sent > window_end) break;  // oldest first: the rest went out later still
      latency.record(nanos_between(sent, window_end));
      ++unanswered;
      oldest_unanswered = std::max(oldest_unanswered, window_end - sent);
    }
  }
}

// Stream: a connection whose server took not one more byte in the second
// half of the window stalled there, as a ping-pong message unanswered for
// that long: a server that stopped reading shows as a stall, not only as a
// lower rate. A slow one that still takes a large message bit by bit does
// not.
void Worker::count_untaken(Clock::time_point window_end) {
  for (auto& slot : slots) {
    if (!slot->ready || !slot->conn || !slot->halfway) continue;
    const size_t unsent = slot->conn->output_bytes();
    if (unsent == 0 || slot->taken != slot->taken_halfway || unsent < slot->unsent_halfway)
      continue;
    ++unanswered;
    oldest_unanswered = std::max(oldest_unanswered, window_end - slot->queued_at);
  }
}

void Worker::note_halfway() {
  for (auto& slot : slots) {
    slot->taken_halfway = slot->taken;
    slot->unsent_halfway = slot->conn ? slot->conn->output_bytes() : 0;
    slot->halfway = true;
  }
}

void Worker::start_client(Slot* slot) {
  ClientOptions co;
  co.connect_timeout =
      std::chrono::milliseconds(static_cast<long long>(opt->connect_timeout_s * 1000));
  co.connection.high_water_mark = size_t{64} * 1024 * 1024;
  // The handshake is part of connecting: the same limit bounds both.
  co.connection.handshake_timeout = co.connect_timeout;
  co.tls = opt->tls;
  slot->client = std::make_unique<TcpClient>(loop, target, co);
  slot->connect_started = Clock::now();
  slot->client->set_on_connection([this, slot](const TcpConnectionPtr& c) {
    c->connected() ? on_up(slot, c) : on_down(slot, c);
  });
  slot->client->set_on_connect_error([this, slot](const Error& e, std::chrono::milliseconds) {
    (e.code() == std::errc::connection_refused ? refused : connect_failed)++;
    // A refusal says why by its count; any other failure's reason is kept.
    if (e.code() != std::errc::connection_refused && connect_error.empty())
      connect_error = e.code().message();
    errors.fetch_add(1, std::memory_order_relaxed);
    settled.fetch_add(1, std::memory_order_relaxed);
    // connrate keeps trying for the whole run; the others report and stop.
    if (opt->mode == BenchMode::connrate && !stopping) {
      loop->queue_in_loop([this, slot] {
        if (!stopping) start_client(slot);
      });
    }
  });
  slot->client->set_on_handshake([this, slot](const TcpConnectionPtr&) { on_ready(slot); });
  slot->client->set_on_message(
      [this, slot](const TcpConnectionPtr& c, Buffer& in) { on_data(slot, *c, in); });
  if (opt->mode == BenchMode::stream) {
    slot->client->set_on_write_complete([this, slot](const TcpConnectionPtr&) {
      if (!slot->ready) return;  // the TLS handshake's own writes
      if (measuring.load(std::memory_order_relaxed)) {
        add(bytes, opt->size);
        add(messages, 1);
      }
      ++slot->taken;
      if (!stopping && slot->conn) {
        slot->queued_at = Clock::now();
        slot->conn->send(std::string_view(pattern->at(0), opt->size));
      }
    });
  }
  slot->client->connect();
}

void Worker::on_data(Slot* slot, TcpConnection& conn, Buffer& in) {
  switch (opt->mode) {
    case BenchMode::pingpong:
      on_pingpong_data(slot, conn, in);
      return;
    case BenchMode::connrate:
      on_connrate_data(slot, in);
      return;
    case BenchMode::stream:
      in.retrieve_all();
      return;
  }
}

void Worker::on_up(Slot* slot, const TcpConnectionPtr& conn) {
  slot->conn = conn;
  if (opt->mode == BenchMode::pingpong) conn->set_context(Flight{});
}

void Worker::on_ready(Slot* slot) {
  slot->ready = true;
  connected.fetch_add(1, std::memory_order_relaxed);
  settled.fetch_add(1, std::memory_order_relaxed);
  connections.fetch_add(1, std::memory_order_relaxed);
  switch (opt->mode) {
    case BenchMode::pingpong:
      slot->paced_from = Clock::now();
      slot->paced = 0;
      if (opt->rate <= 0) send_message(slot, Clock::now());
      break;
    case BenchMode::connrate:
      if (measuring.load(std::memory_order_relaxed))
        latency.record(nanos_between(slot->connect_started, Clock::now()));
      slot->conn->send(std::string_view("x", 1));
      break;
    case BenchMode::stream:
      slot->queued_at = Clock::now();
      slot->conn->send(std::string_view(pattern->at(0), opt->size));
      break;
  }
}

void Worker::on_down(Slot* slot, const TcpConnectionPtr& conn) {
  const bool was_ready = slot->ready;
  if (was_ready) connected.fetch_sub(1, std::memory_order_relaxed);
  slot->ready = false;
  slot->conn.reset();
  if (stopping) return;
  // Only a TLS connection closes before it is ready: its handshake failed.
  if (!was_ready) {
    if (opt->mode != BenchMode::connrate) settled.fetch_add(1, std::memory_order_relaxed);
    handshake_failed(conn);
  }
  if (opt->mode == BenchMode::connrate) {
    // Replace the finished client after this callback has returned.
    loop->queue_in_loop([this, slot] {
      if (!stopping) start_client(slot);
    });
    if (was_ready && slot->received == 0 && conn->close_reason() != std::errc::operation_canceled) {
      ++reset;
      note_close(conn);
      errors.fetch_add(1, std::memory_order_relaxed);
    }
    slot->received = 0;
    return;
  }
  if (!was_ready) return;
  // Mid-run, a close is an error, and whatever was in flight is lost.
  ++reset;
  note_close(conn);
  errors.fetch_add(1, std::memory_order_relaxed);
  if (const Flight* flight = conn->context<Flight>()) lost += flight->send_pos - flight->recv_pos;
}

void Worker::note_close(const TcpConnectionPtr& conn) {
  if (!close_error.empty()) return;
  const std::error_code why = conn->close_reason();
  close_error = why == Errc::peer_closed ? "closed by the server" : why.message();
}

void Worker::handshake_failed(const TcpConnectionPtr& conn) {
  ++tls_failed;
  errors.fetch_add(1, std::memory_order_relaxed);
  if (!tls_error.empty()) return;
  const std::error_code why = conn->close_reason();
  if (conn->close_kind() == CloseReason::handshake_timeout) {
    tls_error = fmt::format("TLS handshake with {}: no answer within {:g} s — is it a TLS server?",
                            target.to_string(), opt->connect_timeout_s);
    return;
  }
  // The hint connect gives: a plaintext server answers a hello so.
  const bool not_tls = why == Errc::peer_closed || is_plaintext_peer(why);
  tls_error = fmt::format("TLS handshake with {}: {}{}", target.to_string(),
                          why == Errc::peer_closed ? "connection closed" : why.message(),
                          not_tls ? " — is the server speaking TLS on this port?" : "");
}

void Worker::send_message(Slot* slot, Clock::time_point when) {
  TcpConnection& conn = *slot->conn;
  send_stream(*conn.context<Flight>(), conn, opt->size, when);
}

uint64_t Worker::room(const Slot* slot) const {
  TcpConnection& conn = *slot->conn;
  const size_t unsent = conn.output_bytes();
  const uint32_t in_flight = conn.context<Flight>()->sent_at.size();
  if (unsent >= kMaxUnsentBytes || in_flight >= kMaxInFlight) return 0;
  // Whole messages until the unsent bytes reach the bound: the last may pass it.
  const uint64_t by_bytes = (kMaxUnsentBytes - unsent + opt->size - 1) / opt->size;
  return std::min<uint64_t>(by_bytes, kMaxInFlight - in_flight);
}

// The few messages a tick finds due on a connection at a sane rate go out
// one send each, as independent requests would, so that a server meets the
// same writes it would from separate clients. More than kSeparateSends
// (an extreme rate, or a catch-up after a stall) go out in one write, not a
// system call each (on loopback each write also runs the receiver's side of
// TCP), so that a tick's work stays short however many are due.
void Worker::send_due(Slot* slot, uint64_t count, double step_ns) {
  constexpr uint64_t kSeparateSends = 16;
  auto due_at = [&](uint64_t k) {
    // Message k > 0 is due at k * step_ns, at most the time elapsed: finite.
    const double at_ns = k == 0 ? 0 : static_cast<double>(k) * step_ns;
    return slot->paced_from + std::chrono::nanoseconds(std::llround(at_ns));
  };
  if (count <= kSeparateSends) {
    for (uint64_t i = 0; i < count; ++i) send_message(slot, due_at(slot->paced++));
    return;
  }
  TcpConnection& conn = *slot->conn;
  Flight& flight = *conn.context<Flight>();
  std::string batch;
  batch.reserve(count * opt->size);
  for (uint64_t i = 0; i < count; ++i) {
    flight.sent_at.push(due_at(slot->paced++));
    batch.append(pattern->at(flight.send_pos), opt->size);
    flight.send_pos += opt->size;
  }
  conn.send(std::move(batch));
}

void Worker::note_mismatch(const Slot* slot, const Mismatch& m) {
  if (first_mismatch) return;
  first_mismatch = m;
  first_mismatch->connection = slot->index;
}

void Worker::send_stream(Flight& flight, TcpConnection& conn, size_t n, Clock::time_point when) {
  const uint64_t from = flight.send_pos;
  // A message starts at every multiple of size in [from, from + n).
  for (uint64_t k = boundaries_in(from + opt->size - 1, from + n + opt->size - 1, opt->size); k > 0;
       --k) {
    flight.sent_at.push(when);
  }
  flight.send_pos += n;
  // At most one message: a whole one, or (closed loop) the answer to what
  // came back of the one in flight.
  assert(n <= pattern->run());
  conn.send(std::string_view(pattern->at(from), n));
}

// Closed loop (no --rate): every byte that comes back is answered at once by
// as many new bytes, as a minimal ping-pong client does, so `size` bytes per
// connection stay in flight even while a message arrives in pieces. The
// loop's wake-up time serves as "now" for the latencies a read completes and
// the messages it starts: no clock read per message (the loop reads the
// clock once per wake-up), and a reply is timed from when the loop woke to
// it, not from when its turn in the batch came.
void Worker::on_pingpong_data(Slot* slot, TcpConnection& conn, Buffer& in) {
  Flight& flight = *conn.context<Flight>();
  size_t n = in.readable_bytes();
  const uint64_t owed = flight.send_pos - flight.recv_pos;
  size_t bad = 0;
  for (size_t done = 0; done < std::min<uint64_t>(n, owed);) {
    const char* got = in.peek() + done;
    const size_t len =
        std::min(static_cast<size_t>(owed) - done, std::min(n - done, pattern->run()));
    const size_t wrong = count_mismatches(got, pattern->at(flight.recv_pos + done, got), len);
    if (wrong != 0 && !first_mismatch) {
      const size_t at = static_cast<size_t>(
          std::mismatch(got, got + len, pattern->at(flight.recv_pos + done, got)).first - got);
      note_mismatch(slot, describe_mismatch(*pattern, flight.recv_pos + done + at, got + at,
                                            std::min<uint64_t>(n, owed) - done - at));
    }
    bad += wrong;
    done += len;
  }
  if (n > owed) {
    // Bytes nobody asked for: extra, so wrong.
    if (!first_mismatch) {
      Mismatch m;
      m.offset = flight.send_pos;
      m.got = static_cast<unsigned char>(in.peek()[owed]);
      note_mismatch(slot, m);
    }
    bad += n - owed;
    n = static_cast<size_t>(owed);
  }
  if (bad != 0) {
    mismatched += bad;
    errors.fetch_add(1, std::memory_order_relaxed);
  }
  in.retrieve_all();
  const uint64_t done = boundaries_in(flight.recv_pos, flight.recv_pos + n, opt->size);
  flight.recv_pos += n;
  if (n == 0) return;
  const auto now = loop->now();
  const bool counting = measuring.load(std::memory_order_relaxed);
  for (uint64_t k = 0; k < done; ++k) {
    if (counting) latency.record(nanos_between(flight.sent_at.front(), now));
    flight.sent_at.pop();
  }
  if (counting && done > 0) {
    add(messages, done);
    add(bytes, done * opt->size);
  }
  if (opt->rate <= 0 && !stopping) send_stream(flight, conn, n, now);
}

void Worker::on_connrate_data(Slot* slot, Buffer& in) {
  if (in.readable_bytes() == 0) return;
  if (in.peek()[0] != 'x' || in.readable_bytes() != 1) {
    if (!first_mismatch) {
      Mismatch m;
      m.offset = in.peek()[0] != 'x' ? 0 : 1;
      m.expected = in.peek()[0] != 'x' ? 'x' : -1;
      m.got = static_cast<unsigned char>(in.peek()[m.offset]);
      note_mismatch(slot, m);
    }
    mismatched += in.readable_bytes();
    errors.fetch_add(1, std::memory_order_relaxed);
  }
  in.retrieve_all();
  slot->received = 1;
  if (measuring.load(std::memory_order_relaxed)) add(messages, 1);
  if (slot->conn) slot->conn->force_close();
}

// Open-loop pacing: every connection sends on its own schedule, whether or
// not earlier replies came back, and latency counts from the scheduled time
// (so a stalled server cannot hide its stall: no coordinated omission).
// What is due is counted, not stepped to: the count is bounded whatever the
// interval (a fraction of a nanosecond, or longer than any run). A server
// that falls behind fills the connection's room (room()); the messages
// due meanwhile are not sent, and count as missed, so the client's memory
// stays bounded and the sent ones keep their own scheduled times.
void Worker::tick() {
  const auto now = Clock::now();
  const double step_ns = interval_ns();
  const bool counting = measuring.load(std::memory_order_relaxed);
  for (auto& owned : slots) {
    Slot* slot = owned.get();
    if (!slot->ready || now < slot->paced_from) continue;
    const double elapsed_ns =
        std::chrono::duration<double, std::nano>(now - slot->paced_from).count();
    // Messages due by now, the one at paced_from included; capped far
    // beyond any run so that the conversion cannot overflow.
    double due_count = std::floor(elapsed_ns / step_ns) + 1;
    if (!(due_count < 1e18)) due_count = 1e18;
    const uint64_t due = static_cast<uint64_t>(due_count);
    if (slot->paced >= due) continue;
    const uint64_t sendable = std::min(due - slot->paced, room(slot));
    if (sendable > 0) send_due(slot, sendable, step_ns);
    if (slot->paced < due) {
      if (counting) missed += due - slot->paced;
      slot->paced = due;
    }
  }
}

BenchRunner::BenchRunner(BenchOptions options, Endpoint target)
    : options_(std::move(options)), target_(std::move(target)) {}

BenchRunner::~BenchRunner() = default;

Result<BenchResult> BenchRunner::run() {
  // Before any thread starts, so that the stop signals reach the run's
  // loop (watch_stop_signals below), not a worker's default action.
  block_stop_signals();
  const Pattern pattern(options_.size);
  auto created = EventLoop::create(options_.io_backend);
  if (!created) return created.error();
  EventLoop& loop = **created;

  int threads = std::max(1, std::min(options_.threads, options_.conns));
  int first_index = 0;
  for (int t = 0; t < threads; ++t) {
    auto w = std::make_unique<Worker>();
    w->opt = &options_;
    w->target = target_;
    w->pattern = &pattern;
    w->conn_count = options_.conns / threads + (t < options_.conns % threads ? 1 : 0);
    w->first_index = first_index;
    first_index += w->conn_count;
    workers_.push_back(std::move(w));
  }
  // Ends the workers on loop threads: their clients close in their loops.
  auto stop_threads = [this](Clock::time_point window_end) {
    for (auto& w : workers_) {
      Worker* worker = w.get();
      if (!worker->thread) continue;
      if (worker->loop != nullptr)
        worker->loop->run_in_loop([worker, window_end] { worker->finish(window_end); });
      worker->thread->stop();
    }
  };
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (auto r = workers_[i]->start(i == 0 ? &loop : nullptr, options_.io_backend); !r) {
      stop_threads(Clock::now());
      return r.error();
    }
  }
  report_io_backend_fallback("bench", loop);

  auto sum = [this](auto member) {
    uint64_t total = 0;
    for (auto& w : workers_) total += ((*w).*member).load(std::memory_order_relaxed);
    return total;
  };
  auto connected_now = [this] {
    int total = 0;
    for (auto& w : workers_) total += w->connected.load(std::memory_order_relaxed);
    return total;
  };
  auto settled_now = [this] {
    int total = 0;
    for (auto& w : workers_) total += w->settled.load(std::memory_order_relaxed);
    return total;
  };

  // The run's phases are timers on the main loop, beside worker 0:
  // connecting, measuring for the duration (with --live, a line a second),
  // then the end, where worker 0's finish() quits the loop.
  BenchResult result;
  result.threads = threads;
  Clock::time_point start;
  bool measuring = false;
  TimerId live = 0;
  TimerId end_timer = 0;
  TimerId connect_check = 0;
  TimerId halfway_timer = 0;
  auto end_run = [&] {
    if (halfway_timer != 0) loop.cancel(halfway_timer);
    for (auto& w : workers_) w->measuring = false;
    const Clock::time_point window_end = Clock::now();
    result.seconds = measuring ? std::chrono::duration<double>(window_end - start).count() : 0;
    if (live != 0) loop.cancel(live);
    if (options_.live) fmt::print(stderr, "\n");
    stop_threads(window_end);
    workers_.front()->finish(window_end);
  };
  auto start_measuring = [&] {
    result.connected_at_start = connected_now();
    for (auto& w : workers_) w->measuring = true;
    measuring = true;
    start = Clock::now();
    end_timer = loop.run_after(std::chrono::duration<double>(options_.duration_s), end_run);
    if (options_.mode == BenchMode::stream) {
      halfway_timer = loop.run_after(std::chrono::duration<double>(options_.duration_s / 2), [&] {
        halfway_timer = 0;
        for (auto& w : workers_) {
          Worker* worker = w.get();
          worker->loop->run_in_loop([worker] { worker->note_halfway(); });
        }
      });
    }
    if (!options_.live) return;
    live = loop.run_every(std::chrono::seconds(1), [&] {
      double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      print_live(elapsed, sum(&Worker::messages), sum(&Worker::bytes), sum(&Worker::errors),
                 connected_now());
    });
  };
  // Connect phase: until every connection is up or has failed (or the
  // timeout), before measuring.
  if (options_.mode == BenchMode::connrate) {
    start_measuring();
  } else {
    const auto deadline =
        Clock::now() +
        std::chrono::milliseconds(static_cast<long long>(options_.connect_timeout_s * 1000));
    // `deadline` by value: the check runs in loop.run(), after this block.
    connect_check = loop.run_every(std::chrono::milliseconds(5), [&, deadline] {
      if (settled_now() < options_.conns && Clock::now() < deadline) return;
      loop.cancel(connect_check);
      connect_check = 0;
      start_measuring();
    });
  }
  // SIGINT, SIGTERM or SIGHUP ends the run where it is, and the report
  // covers what was measured until then (a second one exits at once).
  // Watched before any connection takes the descriptors that are left.
  auto stop_signals = watch_stop_signals(loop, [&](int signo) {
    if (result.interrupted_by != 0) return;
    result.interrupted_by = signo;
    if (connect_check != 0) loop.cancel(connect_check);
    if (end_timer != 0) loop.cancel(end_timer);
    end_run();
  });
  if (!stop_signals) {
    stop_threads(Clock::now());
    return stop_signals.error();
  }
  // Every loop is up: only now do the connections start (worker 0's at
  // once, on this thread), so that no client outlives a failed start.
  for (auto& w : workers_) w->launch();
  loop.run();

  for (auto& w : workers_) {
    result.messages += w->messages.load();
    result.bytes += w->bytes.load();
    result.connections += w->connections.load();
    result.mismatched_bytes += w->mismatched;
    result.lost_bytes += w->lost;
    result.refused += w->refused;
    result.reset += w->reset;
    result.connect_failed += w->connect_failed;
    result.tls_failed += w->tls_failed;
    result.missed_sends += w->missed;
    result.unanswered += w->unanswered;
    result.oldest_unanswered_ns = std::max<uint64_t>(
        result.oldest_unanswered_ns,
        std::chrono::duration_cast<std::chrono::nanoseconds>(w->oldest_unanswered).count());
    if (result.tls_error.empty()) result.tls_error = w->tls_error;
    if (result.connect_error.empty()) result.connect_error = w->connect_error;
    if (result.close_error.empty()) result.close_error = w->close_error;
    if (!result.first_mismatch) result.first_mismatch = w->first_mismatch;
    result.latency.merge(w->latency);
    result.busy_poll_idle_s += std::chrono::duration<double>(w->busy_poll_idle).count();
  }
  return result;
}

void BenchRunner::print_live(double elapsed, uint64_t messages, uint64_t bytes, uint64_t errors,
                             int conns) {
  double mib = static_cast<double>(bytes) / (1024.0 * 1024.0) / elapsed;
  double rate = static_cast<double>(messages) / elapsed;
  fmt::print(stderr, "\r{:6.1f} s  {:10.1f} MiB/s  {:12.0f} msg/s  conns {:6}  errors {:6}",
             elapsed, mib, rate, conns, errors);
  std::fflush(stderr);
}

}  // namespace tcpkit::cli

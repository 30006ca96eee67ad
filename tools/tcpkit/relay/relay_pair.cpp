#include "relay/relay_pair.h"

#include <sys/socket.h>

#include <fmt/core.h>

#include <algorithm>
#include <tuple>

#include "tcpkit/buffer.h"

namespace tcpkit::cli {

ConnectionOptions relay_connection_options(const RelayOptions& options) {
  ConnectionOptions o;
  o.idle_timeout = options.idle_timeout;
  o.handshake_timeout = options.handshake_timeout;
  // The library's own policy pauses the connection whose output is full,
  // but a relay must pause the *other* side. RelayPair does that at
  // kHighWater, so this mark is only a backstop that is never reached.
  o.high_water_mark = 64 * RelayPair::kHighWater;
  o.overflow = OverflowPolicy::pause_reading;
  return o;
}

void RelayPair::reset_side(const Side& side) {
  if (side && !side->disconnected()) side->abort();
}

namespace {

// Why one side went down, for the pair's log line.
std::string describe(const TcpConnection& side) {
  const std::error_code code = side.close_reason();
  switch (side.close_kind()) {
    case CloseReason::tls_handshake_failed:
    case CloseReason::tls_error:
      return fmt::format("{} ({})", label(side.close_kind()), code.message());
    case CloseReason::closed_locally:
      return "closed by the relay";
    case CloseReason::error:
      return code.message();
    default:
      return std::string(describe(side.close_kind()));
  }
}

}  // namespace

RelayPair::RelayPair(const RelayOptions& options, const TcpConnectionPtr& client, Hooks hooks,
                     uint64_t sequence, ToxicListPtr toxics)
    : options_(options),
      loop_(client->loop()),
      hooks_(std::move(hooks)),
      peer_(client->peer_endpoint().to_string()),
      upstream_name_(options.upstream_text),
      client_(client),
      initial_toxics_(std::move(toxics)),
      rng_(options.seed ? static_cast<std::minstd_rand::result_type>(*options.seed + sequence)
                        : std::random_device{}()),
      toxics_(client->peer_endpoint(), sequence, options.seed) {}

// finish() has normally handed the TcpClient to the loop already; when the
// pair dies unfinished (the program is exiting) the TcpClient stops here.
RelayPair::~RelayPair() = default;

void RelayPair::start() {
  set_toxics(initial_toxics_);
  initial_toxics_.reset();
  ClientOptions co;
  co.connect_timeout = options_.connect_timeout;
  co.connection = relay_connection_options(options_);
  co.tls = options_.upstream_tls;
  co.tls_server_name = options_.upstream_name;
  connector_ = std::make_unique<TcpClient>(loop_, options_.upstream, co);
  std::weak_ptr<RelayPair> weak = weak_from_this();
  connector_->set_on_connection([weak](const TcpConnectionPtr& conn) {
    auto self = weak.lock();
    if (!self) {
      if (conn->connected()) conn->force_close();
      return;
    }
    if (conn->connected()) {
      self->upstream_connected(conn);
    } else {
      self->upstream_closed(conn);
    }
  });
  connector_->set_on_message([weak](const TcpConnectionPtr&, Buffer& in) {
    auto self = weak.lock();
    if (!self) {
      in.retrieve_all();
      return;
    }
    self->receive(self->down_, in);
  });
  connector_->set_on_peer_closed([weak](const TcpConnectionPtr&) {
    if (auto self = weak.lock()) self->source_eof(self->down_);
  });
  connector_->set_on_write_complete([weak](const TcpConnectionPtr&) {
    if (auto self = weak.lock()) self->maybe_resume(self->up_);
  });
  connector_->set_on_connect_error([weak](const Error& error, std::chrono::milliseconds) {
    if (auto self = weak.lock()) self->upstream_failed(error);
  });
  connector_->connect();
}

// ---- the client's events ---------------------------------------------------

void RelayPair::client_message(Buffer& in) {
  receive(up_, in);
}
void RelayPair::client_peer_closed() {
  source_eof(up_);
}
void RelayPair::client_write_complete() {
  maybe_resume(down_);
}

void RelayPair::client_closed() {
  client_gone_ = true;
  side_closed(client_, upstream_, down_.eof, "client");
  // A connect still in flight is abandoned; finish() stops it.
  if (upstream_state_ == Upstream::connecting) upstream_state_ = Upstream::closed;
  maybe_finish();
}

// ---- the upstream's events -------------------------------------------------

void RelayPair::upstream_connected(const TcpConnectionPtr& conn) {
  // The client left, or its TLS handshake failed, while we were connecting.
  if (upstream_state_ != Upstream::connecting || ending_) {
    conn->force_close();
    return;
  }
  upstream_state_ = Upstream::connected;
  upstream_ = conn;
  upstream_name_ = conn->peer_endpoint().to_string();
  if (upstream_held_) conn->keep_from_idling(true);
  if (hooks_.on_connected) hooks_.on_connected(*this);
  check_fault();  // --reset-after 0 / --close-after 0
  pump(up_);      // what the client sent while we were connecting
}

void RelayPair::upstream_failed(const Error& error) {
  if (upstream_state_ != Upstream::connecting) return;
  upstream_state_ = Upstream::closed;
  set_reason(fmt::format("upstream unreachable: {}", error.message()));
  end_forwarding();
  if (client_) client_->force_close();
  maybe_finish();
}

void RelayPair::upstream_closed(const TcpConnectionPtr& conn) {
  if (conn != upstream_) return;  // one we refused in upstream_connected()
  upstream_state_ = Upstream::closed;
  side_closed(upstream_, client_, up_.eof, "upstream");
  maybe_finish();
}

// A side closed. After a clean close (FIN both ways) the other side finishes
// by itself once its queue drains, provided it will send nothing more;
// otherwise it goes down too, and a reset is passed on as a reset. A clean
// close names the side whose FIN came first, unless a TLS side's FIN came
// without its close_notify: what that side sent may be cut short (by an
// attacker, or a crash), which the log says as openssl and curl do.
void RelayPair::side_closed(const Side& closed, Side& other, bool other_done, const char* who) {
  const CloseReason kind = closed->close_kind();
  const bool clean = kind == CloseReason::peer_closed;
  if (!clean) {
    set_reason(fmt::format("{}: {}", who, describe(*closed)));
  } else if (!truncated_.empty()) {
    set_reason(fmt::format("{} closed without TLS close_notify (truncated)", truncated_));
  } else {
    set_reason(fmt::format("closed by {}", first_fin_.empty() ? who : first_fin_));
  }
  if (ending_ || (clean && other_done)) return;
  end_forwarding();
  if (!other || other->disconnected()) return;
  if (kind == CloseReason::reset) {
    reset_side(other);
  } else {
    other->force_close();
  }
}

// ---- forwarding ------------------------------------------------------------

bool RelayPair::shaping(const Flow& flow) const {
  return options_.faults.delay.count() > 0 || options_.faults.jitter.count() > 0 ||
         options_.faults.rate > 0 || options_.faults.chunk > 0 || toxics_.any(flow.stream) ||
         toxics_.has_frames(flow.stream);
}

void RelayPair::receive(Flow& flow, Buffer& in) {
  if (ending_) {
    in.retrieve_all();
    return;
  }
  // The first data in a reset_peer toxic's direction starts its clock.
  if (in.readable_bytes() > 0) arm_deadlines(toxics_.data_arrived(flow.stream));
  // A timeout toxic: what is sent now is lost, as on a dead link.
  if (toxics_.holding(flow.stream)) {
    in.retrieve_all();
    return;
  }
  // The plain forwarder's path: no copy into a queue, no timer.
  if (!shaping(flow) && flow.queue.empty() && *flow.sink) {
    forward(flow, in.view());
    in.retrieve_all();
  } else if (toxics_.has_frames(flow.stream)) {
    for (auto& piece : toxics_.frames(flow.stream, in.view()))
      enqueue(flow, piece.data, piece.extra);
    in.retrieve_all();
    pump(flow);
  } else {
    enqueue(flow, in.view());
    in.retrieve_all();
    pump(flow);
  }
  hold_idle_while_on_the_way();
  check_pressure(flow);
}

// A side is not idle (--idle-timeout) while bytes it sent are on their way
// to the other peer: in the relay's queue (--delay, --rate, a toxic) or in
// the other side's output. Nor is the other side while the relay holds
// them back: it waits for the relay, not for its peer. A side's own output
// keeps only the other side: a peer that stopped reading idles out, and
// its pair with it. A toxic that drops bytes (timeout) holds none.
void RelayPair::hold_idle_while_on_the_way() {
  const bool client = waiting(up_) > 0 || !down_.queue.empty();
  const bool upstream = waiting(down_) > 0 || !up_.queue.empty();
  for (auto [side, held, now] : {std::tuple{&client_, &client_held_, client},
                                 std::tuple{&upstream_, &upstream_held_, upstream}}) {
    if (*held == now) continue;
    *held = now;
    if (*side && !(*side)->disconnected()) (*side)->keep_from_idling(now);
  }
}

// One read becomes one chunk; pump() cuts it into --chunk / --rate pieces.
void RelayPair::enqueue(Flow& flow, std::string_view data, std::chrono::milliseconds extra) {
  Chunk chunk{std::string(data), 0, {}, Clock::now(), flag_delay(), std::min(extra, kMaxDelay)};
  chunk.due = std::max(due_time(flow, chunk), flow.last_due);  // order is kept, jitter or not
  flow.last_due = chunk.due;
  flow.queued += data.size();
  flow.queue.push_back(std::move(chunk));
}

RelayPair::Clock::time_point RelayPair::due_time(Flow& flow, const Chunk& chunk) {
  // Each part is at most kMaxDelay, and so is their sum: small enough for
  // the clock's nanoseconds.
  const auto latency = std::min(toxics_.latency(flow.stream), kMaxDelay);
  return chunk.read_at + std::min(chunk.flag_wait + latency + chunk.frame_wait, kMaxDelay);
}

// As if each chunk had been read under the toxics now in place: a latency
// toxic removed lets its data go at once, one made shorter shortens the
// wait, a frame delay counts only while a frame toxic that delays is still
// there, and a slicer's pause ends with its slicer. toxiproxy likewise
// lets a waiting chunk go when its toxic is removed or updated. Jitter is
// drawn again.
void RelayPair::retime(Flow& flow) {
  Clock::time_point last{};
  const auto frame_wait = toxics_.frame_delay(flow.stream);
  for (Chunk& chunk : flow.queue) {
    chunk.frame_wait = std::min(chunk.frame_wait, frame_wait);
    if (chunk.offset == 0) chunk.due = std::max(due_time(flow, chunk), last);
    last = std::max(last, chunk.due);
  }
  flow.last_due = last;
  flow.slice_until = {};
  if (flow.timer != 0) loop_->cancel(flow.timer);
  flow.timer = 0;
}

void RelayPair::pump(Flow& flow) {
  Side& sink = *flow.sink;
  if (!sink || ending_) return;
  // A reset_peer counting down holds everything back, the FIN too: its
  // RST comes instead. Removed first, it lets all of it go, in order.
  if (toxics_.resetting(flow.stream)) return;
  auto now = Clock::now();
  while (!flow.queue.empty()) {
    Chunk& chunk = flow.queue.front();
    auto ready = std::max({chunk.due, flow.not_before, flow.slice_until});
    if (ready > now) {
      arm_timer(flow, ready);
      break;
    }
    size_t n = std::min(piece_size(flow), chunk.data.size() - chunk.offset);
    std::string_view piece(chunk.data.data() + chunk.offset, n);
    chunk.offset += n;
    flow.queued -= n;
    bool last = chunk.offset == chunk.data.size();
    if (uint64_t bps = rate(flow); bps > 0) {
      auto transmit = std::chrono::nanoseconds(n * 1'000'000'000ULL / bps);
      flow.not_before = std::max(flow.not_before, now) + transmit;
    }
    // --chunk with --delay: every piece waits its own delay after the last.
    if (options_.faults.chunk > 0)
      flow.not_before = std::max(flow.not_before, now + next_delay(flow));
    // A slicer toxic's pause between pieces.
    if (auto pause = toxics_.slice_delay(flow.stream); pause.count() > 0)
      flow.slice_until = now + pause;
    forward(flow, piece);
    if (ending_) return;  // a fault fired and cleared the queue
    if (last) flow.queue.pop_front();
  }
  if (flow.queue.empty() && flow.eof && !flow.shut) pass_fin(flow);
  maybe_resume(flow);
}

// FIN once the sink's output buffer has drained; a slow_close toxic holds
// it back for its delay first.
void RelayPair::pass_fin(Flow& flow) {
  auto hold = toxics_.slow_close(flow.stream);
  if (hold.count() > 0 && flow.close_timer == 0) {
    std::weak_ptr<RelayPair> weak = weak_from_this();
    bool up = &flow == &up_;
    flow.close_timer = loop_->run_after(hold, [weak, up] {
      auto self = weak.lock();
      if (!self) return;
      Flow& f = up ? self->up_ : self->down_;
      if (f.shut || !*f.sink || self->ending_) return;
      f.shut = true;
      (*f.sink)->shutdown();
    });
    return;
  }
  if (hold.count() > 0) return;  // the timer passes it on
  flow.shut = true;
  (*flow.sink)->shutdown();
}

void RelayPair::arm_timer(Flow& flow, Clock::time_point when) {
  // Only the front chunk waits, and its time moves only in retime(), which
  // cancels the timer: one timer per flow is enough.
  if (flow.timer != 0) return;
  std::weak_ptr<RelayPair> weak = weak_from_this();
  bool up = &flow == &up_;
  flow.timer = loop_->run_after(when - Clock::now(), [weak, up] {
    auto self = weak.lock();
    if (!self) return;
    Flow& f = up ? self->up_ : self->down_;
    f.timer = 0;
    self->pump(f);
  });
}

void RelayPair::forward(Flow& flow, std::string_view data) {
  uint64_t limit = fault_limit();
  uint64_t total = up_.forwarded + down_.forwarded;
  if (limit != kNoLimit)
    data = data.substr(0, static_cast<size_t>(std::min<uint64_t>(data.size(), limit - total)));
  // limit_data counts one direction, as in toxiproxy.
  const uint64_t allowed = toxics_.limit(flow.stream);
  if (allowed != kNoLimit)
    data = data.substr(0, static_cast<size_t>(std::min<uint64_t>(data.size(), allowed)));
  if (!data.empty()) {
    (*flow.sink)->send(data);
    flow.forwarded += data.size();
    toxics_.carried(flow.stream, data.size());
  }
  if (allowed != kNoLimit && data.size() >= allowed && !ending_) {
    end_pair(false,
             fmt::format("limit_data: {} bytes {}", flow.forwarded, stream_name(flow.stream)));
    return;
  }
  check_fault();
}

void RelayPair::source_eof(Flow& flow) {
  flow.eof = true;
  const char* who = &flow == &up_ ? "client" : "upstream";
  if (first_fin_.empty()) first_fin_ = who;
  // Passed on as a FIN all the same: what came before it is the source's.
  if (truncated_.empty() && *flow.source && (*flow.source)->tls_truncated()) truncated_ = who;
  // A frame toxic holds the bytes after the last whole frame: they are
  // the stream's last, and go before the FIN.
  if (std::string rest = toxics_.take_partial(flow.stream); !rest.empty()) enqueue(flow, rest);
  pump(flow);  // passes the FIN on once everything before it is out
}

size_t RelayPair::waiting(const Flow& flow) const {
  const Side& sink = *flow.sink;
  return flow.queued + (sink ? sink->output_bytes() : 0);
}

void RelayPair::check_pressure(Flow& flow) {
  if (ending_ || flow.paused || !*flow.source || waiting(flow) < kHighWater) return;
  flow.paused = true;
  (*flow.source)->pause_reading();
}

void RelayPair::maybe_resume(Flow& flow) {
  hold_idle_while_on_the_way();  // called as the output drains, too
  if (!flow.paused || waiting(flow) > kLowWater) return;
  flow.paused = false;
  if (*flow.source) (*flow.source)->resume_reading();
}

std::chrono::milliseconds RelayPair::flag_delay() {
  auto delay = options_.faults.delay;
  if (options_.faults.jitter.count() > 0) {
    std::uniform_int_distribution<long long> spread(0, options_.faults.jitter.count());
    delay += std::chrono::milliseconds(spread(rng_));
  }
  return std::min(delay, kMaxDelay);
}

std::chrono::milliseconds RelayPair::next_delay(Flow& flow) {
  // At most about 2^47 ms (64 latency toxics of 2^40 ms, with jitter, and
  // the flags'): no overflow in milliseconds, but past the clock's int64
  // nanoseconds (2^63 ns is about 2^43 ms), so the sum is capped.
  return std::min(flag_delay() + std::min(toxics_.latency(flow.stream), kMaxDelay), kMaxDelay);
}

uint64_t RelayPair::rate(const Flow& flow) const {
  uint64_t flag = options_.faults.rate;
  uint64_t toxic = toxics_.rate(flow.stream);
  if (flag == 0 || toxic == 0) return std::max(flag, toxic);
  return std::min(flag, toxic);
}

size_t RelayPair::piece_size(Flow& flow) {
  size_t piece = options_.faults.chunk > 0 ? options_.faults.chunk : SIZE_MAX;
  // A rate is kept in steps of about 50 ms, not in bursts of a whole read.
  if (uint64_t bps = rate(flow); bps > 0)
    piece = std::min<size_t>(piece, std::max<uint64_t>(1, bps / 20));
  if (size_t slice = toxics_.slice(flow.stream); slice > 0) piece = std::min(piece, slice);
  return piece;
}

}  // namespace tcpkit::cli

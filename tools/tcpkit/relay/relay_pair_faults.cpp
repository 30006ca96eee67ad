// RelayPair's faults: the flags' --reset-after/--close-after, the chaos
// API's toxics that end a connection (timeout, reset_peer, limit_data,
// unplug), and how a pair ends. See relay_pair.h.
#include <fmt/core.h>

#include "relay/relay_pair.h"

namespace tcpkit::cli {

// ---- faults and the end ----------------------------------------------------

uint64_t RelayPair::fault_limit() const {
  uint64_t limit = kNoLimit;
  if (auto unplug = toxics_.unplug_bytes()) limit = unplug->first;
  if (options_.faults.reset_after_set) limit = std::min(limit, options_.faults.reset_after);
  if (options_.faults.close_after_set) limit = std::min(limit, options_.faults.close_after);
  return limit;
}

void RelayPair::check_fault() {
  uint64_t total = up_.forwarded + down_.forwarded;
  if (ending_) return;
  if (auto unplug = toxics_.unplug_bytes(); unplug && total >= unplug->first) {
    end_pair(unplug->second, fmt::format("unplugged after {} bytes", total));
    return;
  }
  if (fault_limit() == kNoLimit || total < fault_limit()) return;
  if (options_.faults.reset_after_set && total >= options_.faults.reset_after) {
    end_pair(true, fmt::format("reset after {} bytes (--reset-after)", total));
    return;
  }
  end_pair(false, fmt::format("closed after {} bytes (--close-after)", total));
}

// The toxics changed: timers of removed toxics stop, those of new ones
// start, those of updated ones start again (toxiproxy restarts an updated
// toxic on live connections), and queued data is looked at again (a
// bandwidth toxic may be gone).
void RelayPair::set_toxics(const ToxicListPtr& toxics) {
  std::vector<std::string> stopped;
  auto started = toxics_.update(toxics, &stopped);
  for (const auto& name : stopped) {
    auto it = toxic_timers_.find(name);
    if (it == toxic_timers_.end()) continue;
    loop_->cancel(it->second);
    toxic_timers_.erase(it);
  }
  if (ending_) return;
  arm_deadlines(started);
  check_fault();
  retime(up_);
  retime(down_);
  pump(up_);
  pump(down_);
}

void RelayPair::arm_deadlines(const std::vector<PairToxics::Deadline>& deadlines) {
  if (ending_) return;
  std::weak_ptr<RelayPair> weak = weak_from_this();
  for (const auto& deadline : deadlines) {
    if (toxic_timers_.count(deadline.name)) continue;
    toxic_timers_[deadline.name] = loop_->run_after(deadline.after, [weak, deadline] {
      if (auto self = weak.lock()) self->toxic_deadline(deadline);
    });
  }
}

void RelayPair::toxic_deadline(const PairToxics::Deadline& deadline) {
  toxic_timers_.erase(deadline.name);
  if (ending_) return;
  end_pair(deadline.reset, fmt::format("{} toxic '{}' after {} ms", type_name(deadline.type),
                                       deadline.name, deadline.after.count()));
}

// A fault ends the pair: both sides reset (RST), or closed cleanly (FIN)
// with a deadline for peers that never answer it.
void RelayPair::end_pair(bool reset, std::string reason) {
  set_reason(std::move(reason));
  end_forwarding();
  if (reset) {
    reset_side(client_);
    reset_side(upstream_);
    return;
  }
  if (client_) client_->shutdown();
  if (upstream_) upstream_->shutdown();
  // A peer that never answers our FIN must not hold the pair forever.
  std::weak_ptr<RelayPair> weak = weak_from_this();
  linger_timer_ = loop_->run_after(options_.drain_timeout, [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->linger_timer_ = 0;
    if (self->client_) self->client_->force_close();
    if (self->upstream_) self->upstream_->force_close();
  });
}

// From now on nothing more is forwarded: queues are dropped, and paused
// sources read again so that a peer still sending is not left blocked.
void RelayPair::end_forwarding() {
  ending_ = true;
  for (auto& [name, timer] : toxic_timers_) loop_->cancel(timer);
  toxic_timers_.clear();
  for (Flow* flow : {&up_, &down_}) {
    if (flow->timer != 0) loop_->cancel(flow->timer);
    flow->timer = 0;
    if (flow->close_timer != 0) loop_->cancel(flow->close_timer);
    flow->close_timer = 0;
    flow->queue.clear();
    flow->queued = 0;
    if (!flow->paused) continue;
    flow->paused = false;
    if (*flow->source) (*flow->source)->resume_reading();
  }
  hold_idle_while_on_the_way();
}

void RelayPair::set_reason(std::string reason) {
  if (reason_.empty()) reason_ = std::move(reason);
}

void RelayPair::maybe_finish() {
  if (finished_ || !client_gone_ || upstream_state_ != Upstream::closed) return;
  finished_ = true;
  end_forwarding();
  if (linger_timer_ != 0) loop_->cancel(linger_timer_);
  linger_timer_ = 0;
  client_.reset();
  upstream_.reset();
  // We may be inside one of the TcpClient's callbacks, which its destructor
  // would clear while they run: let it go after this event instead.
  loop_->queue_in_loop([done = std::shared_ptr<TcpClient>(std::move(connector_))] {});
  if (hooks_.on_finished) hooks_.on_finished(shared_from_this());
}

}  // namespace tcpkit::cli

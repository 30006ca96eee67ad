// TokenBucket: how fast one chat member's lines enter the room (serve
// --chat-rate). It holds up to `burst` tokens and gains `rate` a second; a
// line may go while a whole token is there and costs what take() is told,
// which may leave the bucket in debt: a line that costs more than the burst
// (a long one) still goes, and its sender then waits until the debt is paid
// and a token has grown back. IRC servers pace their clients the same way.
//
// One per member, in its ServeSession; used from the member's loop thread
// only. Times come from the caller, so that tests can give their own.
#pragma once

#include <chrono>

namespace tcpkit::cli {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  // `rate` tokens a second (above 0), at most `burst` (at least 1) held; full
  // at first.
  TokenBucket(double rate, double burst);

  // Whether a line may go at `now`: a whole token is there.
  bool ready(Clock::time_point now);
  // Spends `cost` tokens (after ready() said yes at `now`); the bucket may
  // go below zero.
  void take(double cost, Clock::time_point now);
  // How long from `now` until ready() says yes (zero when it does).
  Clock::duration wait(Clock::time_point now);

 private:
  void refill(Clock::time_point now);

  double rate_;
  double burst_;
  double tokens_;
  Clock::time_point last_{};  // when tokens_ was last brought up to date
  bool started_ = false;      // last_ is set
};

}  // namespace tcpkit::cli

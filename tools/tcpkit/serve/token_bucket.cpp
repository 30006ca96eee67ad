#include "serve/token_bucket.h"

#include <algorithm>
#include <cmath>

namespace tcpkit::cli {

TokenBucket::TokenBucket(double rate, double burst)
    : rate_(rate), burst_(std::max(burst, 1.0)), tokens_(burst_) {}

void TokenBucket::refill(Clock::time_point now) {
  if (!started_ || now < last_) {
    // The first look, or a clock the caller moved back: nothing has grown.
    started_ = true;
    last_ = now;
    return;
  }
  const std::chrono::duration<double> elapsed = now - last_;
  tokens_ = std::min(burst_, tokens_ + elapsed.count() * rate_);
  last_ = now;
}

bool TokenBucket::ready(Clock::time_point now) {
  refill(now);
  return tokens_ >= 1.0;
}

void TokenBucket::take(double cost, Clock::time_point now) {
  refill(now);
  tokens_ -= cost;
}

TokenBucket::Clock::duration TokenBucket::wait(Clock::time_point now) {
  refill(now);
  if (tokens_ >= 1.0) return Clock::duration::zero();
  // Rounded up: a wake-up a nanosecond early would find the token short.
  const double seconds = (1.0 - tokens_) / rate_;
  const auto ticks = std::ceil(seconds * static_cast<double>(Clock::period::den) /
                               static_cast<double>(Clock::period::num));
  return Clock::duration(static_cast<Clock::rep>(ticks));
}

}  // namespace tcpkit::cli

/// \file
/// Durations and deadlines that saturate instead of wrapping: "wait for
/// std::chrono::hours::max()" means never, not a time in the past.
#pragma once

#include <chrono>
#include <ratio>

namespace tcpkit::detail {

/// `d` as a `To`, clamped to To's range; NaN is zero. duration_cast itself
/// overflows: milliseconds::max() in nanoseconds wraps to a negative time.
template <typename To, typename Rep, typename Period>
constexpr To saturating_duration_cast(std::chrono::duration<Rep, Period> d) {
  using Wide = std::chrono::duration<long double, typename To::period>;
  const Wide wide = std::chrono::duration_cast<Wide>(d);
  if (wide != wide) return To::zero();
  if (wide >= Wide(To::max())) return To::max();
  if (wide <= Wide(To::min())) return To::min();
  return std::chrono::duration_cast<To>(d);
}

/// `from + d` for a clock's time point, with a delay below zero taken as
/// zero and a deadline past the clock's end as its end (never reached).
template <typename TimePoint>
constexpr TimePoint saturating_deadline(TimePoint from, typename TimePoint::duration d) {
  if (d <= TimePoint::duration::zero()) return from;
  if (d >= TimePoint::max() - from) return TimePoint::max();
  return from + d;
}

}  // namespace tcpkit::detail

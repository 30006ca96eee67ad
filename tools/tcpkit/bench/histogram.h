// LatencyHistogram: log-bucketed counts of durations, for percentiles.
//
// Values are nanoseconds. Each power of two is split into 64 buckets, so a
// reported percentile is within about 1.6% of the true value, in constant
// memory (about 30 KiB) whatever the range, as HdrHistogram does. One
// histogram per thread; merge() them at the end. Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tcpkit::cli {

class LatencyHistogram {
 public:
  LatencyHistogram();
  void record(uint64_t nanos);
  void merge(const LatencyHistogram& other);
  void clear();
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  // The value at percentile `p` (0..100), in nanoseconds; 0 when empty.
  uint64_t percentile(double p) const;

 private:
  static size_t index_of(uint64_t v);
  static uint64_t value_of(size_t index);

  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  uint64_t max_ = 0;
};

}  // namespace tcpkit::cli

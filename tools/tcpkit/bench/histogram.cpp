#include "bench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace tcpkit::cli {
namespace {
constexpr unsigned kSubBits = 6;  // 64 buckets per power of two
constexpr uint64_t kSubCount = 1ULL << kSubBits;
constexpr size_t kBucketCount = (64 - kSubBits) * kSubCount + kSubCount;
}  // namespace

LatencyHistogram::LatencyHistogram() : buckets_(kBucketCount, 0) {}

// Values below 2*kSubCount map one to one; above, the top kSubBits+1 bits
// of the value pick the bucket within its power of two.
size_t LatencyHistogram::index_of(uint64_t v) {
  if (v < 2 * kSubCount) return static_cast<size_t>(v);
  unsigned exponent = 63 - static_cast<unsigned>(std::countl_zero(v));
  unsigned shift = exponent - kSubBits;
  return static_cast<size_t>((shift + 1) * kSubCount + ((v >> shift) - kSubCount));
}

uint64_t LatencyHistogram::value_of(size_t index) {
  if (index < 2 * kSubCount) return index;
  uint64_t shift = index / kSubCount - 1;
  uint64_t sub = index % kSubCount + kSubCount;
  // The middle of the bucket.
  return (sub << shift) + ((1ULL << shift) >> 1);
}

void LatencyHistogram::record(uint64_t nanos) {
  ++buckets_[std::min(index_of(nanos), kBucketCount - 1)];
  ++count_;
  max_ = std::max(max_, nanos);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < kBucketCount; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::clear() {
  std::fill(buckets_.begin(), buckets_.end(), 0);
  count_ = 0;
  max_ = 0;
}

uint64_t LatencyHistogram::percentile(double p) const {
  if (count_ == 0) return 0;
  auto rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBucketCount; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(value_of(i), max_);
  }
  return max_;
}

}  // namespace tcpkit::cli

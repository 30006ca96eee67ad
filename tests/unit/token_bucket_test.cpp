// TokenBucket, the flood control of `serve --mode chat` (--chat-rate): a
// burst, then a steady rate, and debt for a line that costs more than the
// burst. Times are given by the test, so nothing here waits.
#include "serve/token_bucket.h"

#include <gtest/gtest.h>

#include <chrono>

using namespace std::chrono_literals;
using tcpkit::cli::TokenBucket;

namespace {

const TokenBucket::Clock::time_point kStart{1h};

// Spends a token per ready() at `at` until none is left; returns how many went.
int lines_ready_at(TokenBucket& bucket, TokenBucket::Clock::time_point at) {
  int lines = 0;
  while (bucket.ready(at) && lines < 1000) {
    bucket.take(1, at);
    ++lines;
  }
  return lines;
}

TEST(TokenBucket, ABurstGoesAtOnceThenLinesAtTheRate) {
  TokenBucket bucket(10, 10);  // 10 a second after a burst of 10
  EXPECT_EQ(lines_ready_at(bucket, kStart), 10);
  EXPECT_EQ(bucket.wait(kStart), 100ms);
  EXPECT_FALSE(bucket.ready(kStart + 99ms));
  EXPECT_EQ(lines_ready_at(bucket, kStart + 100ms), 1);
  EXPECT_EQ(lines_ready_at(bucket, kStart + 600ms), 5);
}

TEST(TokenBucket, AQuietMemberSavesNoMoreThanTheBurst) {
  TokenBucket bucket(10, 10);
  EXPECT_EQ(lines_ready_at(bucket, kStart), 10);
  EXPECT_EQ(lines_ready_at(bucket, kStart + 1h), 10);
  EXPECT_EQ(bucket.wait(kStart + 1h), 100ms);
}

TEST(TokenBucket, ALineThatCostsMoreThanTheBurstGoesAndItsSenderWaitsOffTheDebt) {
  TokenBucket bucket(2, 2);
  ASSERT_TRUE(bucket.ready(kStart));
  bucket.take(5, kStart);  // 2 - 5: three tokens in debt
  EXPECT_FALSE(bucket.ready(kStart));
  // Back to one whole token: four tokens at two a second.
  EXPECT_EQ(bucket.wait(kStart), 2s);
  EXPECT_FALSE(bucket.ready(kStart + 1999ms));
  EXPECT_TRUE(bucket.ready(kStart + 2s));
  EXPECT_EQ(bucket.wait(kStart + 2s), 0s);
}

TEST(TokenBucket, ABurstBelowOneStillLetsALineGo) {
  TokenBucket bucket(0.5, 0);  // one line every two seconds
  EXPECT_EQ(lines_ready_at(bucket, kStart), 1);
  EXPECT_EQ(bucket.wait(kStart), 2s);
  EXPECT_EQ(lines_ready_at(bucket, kStart + 2s), 1);
}

}  // namespace

#include "tcpkit/length_prefix_codec.h"

#include <sys/mman.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

using tcpkit::Buffer;
using tcpkit::DecodeResult;
using tcpkit::Errc;
using tcpkit::LengthPrefixCodec;

namespace {

DecodeResult drain(const LengthPrefixCodec& codec, Buffer& in, std::vector<std::string>* frames) {
  std::string frame;
  for (;;) {
    const DecodeResult r = codec.decode(in, &frame);
    if (r != DecodeResult::frame) return r;
    frames->push_back(frame);
  }
}

std::string header(uint32_t length) {
  const char bytes[4] = {static_cast<char>(length >> 24), static_cast<char>(length >> 16),
                         static_cast<char>(length >> 8), static_cast<char>(length)};
  return std::string(bytes, 4);
}

}  // namespace

TEST(LengthPrefixCodec, EncodeWritesBigEndianHeader) {
  Buffer out;
  ASSERT_TRUE(LengthPrefixCodec::encode("hello", out));
  EXPECT_EQ(out.view(), header(5) + "hello");
  EXPECT_EQ(out.view().substr(0, 4), std::string_view("\0\0\0\5", 4));
}

// Regression: only an assert checked the size, so a release build wrote a
// payload of 4 GiB + 8 bytes under a header announcing 8: the payload's
// tail became frames of the sender's choosing. The pages are reserved, not
// touched: encode() refuses before it reads a byte.
TEST(LengthPrefixCodec, EncodeRefusesAPayloadTheHeaderCannotCountAndWritesNothing) {
  const size_t size = size_t{std::numeric_limits<uint32_t>::max()} + 9;
  void* pages =
      ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(pages, MAP_FAILED);
  Buffer out;
  auto encoded =
      LengthPrefixCodec::encode(std::string_view(static_cast<const char*>(pages), size), out);
  ::munmap(pages, size);
  ASSERT_FALSE(encoded);
  EXPECT_EQ(encoded.error().code(), Errc::frame_too_large);
  EXPECT_NE(encoded.error().message().find("4294967304 bytes"), std::string::npos)
      << encoded.error().message();
  EXPECT_EQ(out.readable_bytes(), 0u);
}

TEST(LengthPrefixCodec, RoundTrip) {
  LengthPrefixCodec codec;
  Buffer buf;
  ASSERT_TRUE(LengthPrefixCodec::encode("one", buf));
  ASSERT_TRUE(LengthPrefixCodec::encode(std::string(3000, 'z'), buf));
  std::vector<std::string> frames;
  EXPECT_EQ(drain(codec, buf, &frames), DecodeResult::need_more);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0], "one");
  EXPECT_EQ(frames[1], std::string(3000, 'z'));
  EXPECT_EQ(buf.readable_bytes(), 0u);
}

TEST(LengthPrefixCodec, ZeroLengthFrameIsAMessage) {
  LengthPrefixCodec codec;
  Buffer in;
  in.append(header(0));
  in.append(header(0));
  in.append(header(1) + "x");
  std::vector<std::string> frames;
  EXPECT_EQ(drain(codec, in, &frames), DecodeResult::need_more);
  EXPECT_EQ(frames, (std::vector<std::string>{"", "", "x"}));
}

TEST(LengthPrefixCodec, BinaryPayloadWithNulsSurvives) {
  LengthPrefixCodec codec;
  Buffer buf;
  const std::string payload("\0\n\r\xff\0", 5);
  ASSERT_TRUE(LengthPrefixCodec::encode(payload, buf));
  std::string frame;
  ASSERT_EQ(codec.decode(buf, &frame), DecodeResult::frame);
  EXPECT_EQ(frame, payload);
}

TEST(LengthPrefixCodec, FramesSplitByteByByte) {
  LengthPrefixCodec codec;
  Buffer wire;
  const std::vector<std::string> sent = {"alpha", "", "a somewhat longer frame", "z"};
  for (const auto& s : sent) ASSERT_TRUE(LengthPrefixCodec::encode(s, wire));
  const std::string bytes(wire.view());

  Buffer in;
  std::vector<std::string> frames;
  for (char c : bytes) {
    in.append(&c, 1);
    ASSERT_EQ(drain(codec, in, &frames), DecodeResult::need_more);
  }
  EXPECT_EQ(frames, sent);
  EXPECT_EQ(in.readable_bytes(), 0u);
}

TEST(LengthPrefixCodec, IncompleteHeaderAndPayloadConsumeNothing) {
  LengthPrefixCodec codec;
  Buffer in;
  in.append(header(10).substr(0, 3));
  std::string frame = "untouched";
  EXPECT_EQ(codec.decode(in, &frame), DecodeResult::need_more);
  in.append(header(10).substr(3));
  in.append("12345");
  EXPECT_EQ(codec.decode(in, &frame), DecodeResult::need_more);
  EXPECT_EQ(frame, "untouched");
  EXPECT_EQ(in.readable_bytes(), 9u);
  in.append("67890");
  ASSERT_EQ(codec.decode(in, &frame), DecodeResult::frame);
  EXPECT_EQ(frame, "1234567890");
}

TEST(LengthPrefixCodec, ManyFramesInOneAppend) {
  LengthPrefixCodec codec;
  Buffer wire;
  std::vector<std::string> sent;
  for (int i = 0; i < 1000; ++i) {
    sent.push_back(std::string(static_cast<size_t>(i % 37), static_cast<char>('a' + i % 26)));
    ASSERT_TRUE(LengthPrefixCodec::encode(sent.back(), wire));
  }
  wire.append(header(100) + "partial");
  std::vector<std::string> frames;
  EXPECT_EQ(drain(codec, wire, &frames), DecodeResult::need_more);
  EXPECT_EQ(frames, sent);
  EXPECT_EQ(wire.readable_bytes(), 4u + 7u);
}

TEST(LengthPrefixCodec, FrameOfExactlyMaxSizeIsAccepted) {
  LengthPrefixCodec codec(16);
  Buffer in;
  ASSERT_TRUE(LengthPrefixCodec::encode(std::string(16, 'm'), in));
  std::string frame;
  ASSERT_EQ(codec.decode(in, &frame), DecodeResult::frame);
  EXPECT_EQ(frame.size(), 16u);
}

TEST(LengthPrefixCodec, OversizeHeaderIsRejectedBeforeThePayload) {
  LengthPrefixCodec codec(16);
  Buffer in;
  in.append(header(17));  // only the header has arrived
  std::string frame;
  EXPECT_EQ(codec.decode(in, &frame), DecodeResult::too_large);
  EXPECT_EQ(in.readable_bytes(), 4u) << "too_large consumes nothing";
}

TEST(LengthPrefixCodec, HugeLengthIsRejectedWithDefaultLimit) {
  LengthPrefixCodec codec;
  Buffer in;
  in.append(header(0xFFFFFFFFu));
  std::string frame;
  EXPECT_EQ(codec.decode(in, &frame), DecodeResult::too_large);
  Buffer just_over;
  just_over.append(header(LengthPrefixCodec::kDefaultMaxFrame + 1));
  EXPECT_EQ(codec.decode(just_over, &frame), DecodeResult::too_large);
}

TEST(LengthPrefixCodec, GoodFramesBeforeAnOversizeOneAreDelivered) {
  LengthPrefixCodec codec(8);
  Buffer in;
  ASSERT_TRUE(LengthPrefixCodec::encode("ok", in));
  in.append(header(9));
  std::vector<std::string> frames;
  EXPECT_EQ(drain(codec, in, &frames), DecodeResult::too_large);
  EXPECT_EQ(frames, (std::vector<std::string>{"ok"}));
}

TEST(LengthPrefixCodec, TooLargeErrorNamesTheLimit) {
  LengthPrefixCodec codec(4096);
  const auto err = codec.too_large_error();
  EXPECT_EQ(err.code(), Errc::frame_too_large);
  EXPECT_NE(err.message().find("4096"), std::string::npos) << err.message();
  EXPECT_EQ(LengthPrefixCodec().max_frame(), 1024u * 1024);
}

#include "tcpkit/transcoder.h"

#include <random>
#include <string>

#include <gtest/gtest.h>

using tcpkit::Errc;
using tcpkit::Transcoder;

namespace {

// "收到了你的訊息" (訊 is traditional, and GBK has it: D3 8D).
const std::string kUtf8Message = "收到了你的訊息";
const std::string kGbkMessage = "\xCA\xD5\xB5\xBD\xC1\xCB\xC4\xE3\xB5\xC4\xD3\x8D\xCF\xA2";
// The same text in Big5.
const std::string kBig5Message = "\xA6\xAC\xA8\xEC\xA4\x46\xA7\x41\xAA\xBA\xB0\x54\xAE\xA7";

Transcoder open_or_die(std::string_view from, std::string_view to) {
  auto t = Transcoder::open(from, to);
  EXPECT_TRUE(t) << t.error().message();
  return std::move(t).value();
}

// feed() then finish(), in that order (the operands of `a + b` are unsequenced).
std::string feed_and_finish(Transcoder& t, std::string_view input) {
  std::string out = t.feed(input);
  out += t.finish();
  return out;
}

// Feeds `input` in pieces of random length (1..max_piece) and finishes.
std::string feed_in_pieces(Transcoder& t, std::string_view input, size_t max_piece, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> piece(1, max_piece);
  std::string out;
  while (!input.empty()) {
    const size_t n = std::min(piece(rng), input.size());
    t.feed(input.substr(0, n), &out);
    input.remove_prefix(n);
  }
  t.finish(&out);
  return out;
}

}  // namespace

TEST(Transcoder, GbkRoundTrip) {
  auto gbk = Transcoder::convert("utf-8", "gbk", kUtf8Message);
  ASSERT_TRUE(gbk) << gbk.error().message();
  EXPECT_EQ(*gbk, kGbkMessage);
  auto utf8 = Transcoder::convert("GBK", "UTF-8", *gbk);
  ASSERT_TRUE(utf8) << utf8.error().message();
  EXPECT_EQ(*utf8, kUtf8Message);
}

TEST(Transcoder, SimplifiedTextThroughGb18030) {
  const std::string text = "收到了你的消息";
  auto gb = Transcoder::convert("UTF8", "gb18030", text);
  ASSERT_TRUE(gb);
  EXPECT_EQ(*gb, "\xCA\xD5\xB5\xBD\xC1\xCB\xC4\xE3\xB5\xC4\xCF\xFB\xCF\xA2");
  auto back = Transcoder::convert("gb18030", "utf8", *gb);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, text);
}

TEST(Transcoder, Big5RoundTrip) {
  auto big5 = Transcoder::convert("UTF-8", "big5", kUtf8Message);
  ASSERT_TRUE(big5);
  EXPECT_EQ(*big5, kBig5Message);
  auto utf8 = Transcoder::convert("Big5", "utf-8", kBig5Message);
  ASSERT_TRUE(utf8);
  EXPECT_EQ(*utf8, kUtf8Message);
}

TEST(Transcoder, GbkCharacterSplitAcrossFeedsByteByByte) {
  Transcoder t = open_or_die("gbk", "utf-8");
  std::string out;
  for (size_t i = 0; i < kGbkMessage.size(); ++i) {
    const std::string piece = t.feed(kGbkMessage.substr(i, 1));
    if (i % 2 == 0) {
      // The first byte of each two-byte character: held, nothing emitted yet.
      EXPECT_EQ(piece, "") << "at byte " << i;
      EXPECT_EQ(t.pending_bytes(), 1u);
    } else {
      EXPECT_EQ(piece.size(), 3u) << "one whole UTF-8 character at byte " << i;
      EXPECT_EQ(t.pending_bytes(), 0u);
    }
    out += piece;
  }
  out += t.finish();
  EXPECT_EQ(out, kUtf8Message);
  EXPECT_EQ(t.invalid_bytes(), 0u);
}

TEST(Transcoder, GbkRandomSplitsDecodeExactly) {
  std::string gbk;
  std::string utf8;
  for (int i = 0; i < 200; ++i) {
    gbk += kGbkMessage + "ascii " + std::to_string(i) + "\n";
    utf8 += kUtf8Message + "ascii " + std::to_string(i) + "\n";
  }
  for (unsigned seed = 1; seed <= 5; ++seed) {
    Transcoder t = open_or_die("GBK", "UTF-8");
    EXPECT_EQ(feed_in_pieces(t, gbk, 7, seed), utf8) << "seed " << seed;
    EXPECT_EQ(t.invalid_bytes(), 0u);
  }
}

TEST(Transcoder, InvalidGbkBytesAreEscapedAndCounted) {
  Transcoder t = open_or_die("gbk", "utf-8");
  const std::string out = feed_and_finish(t,
                                          "A\xFF"
                                          "B\xFF\xFF"
                                          "C" +
                                              kGbkMessage.substr(0, 2));
  EXPECT_EQ(out, "A\\xFFB\\xFF\\xFFC收");
  EXPECT_EQ(t.invalid_bytes(), 3u);
}

TEST(Transcoder, IncompleteCharacterAtFinishIsEscaped) {
  Transcoder t = open_or_die("gbk", "utf-8");
  EXPECT_EQ(t.feed("ok\xCA"), "ok");
  EXPECT_EQ(t.pending_bytes(), 1u);
  EXPECT_EQ(t.finish(), "\\xCA");
  EXPECT_EQ(t.invalid_bytes(), 1u);
  EXPECT_EQ(t.pending_bytes(), 0u);
  // Ready for a new stream afterwards.
  EXPECT_EQ(feed_and_finish(t, kGbkMessage), kUtf8Message);
}

TEST(Transcoder, UnrepresentableCharacterIsEscapedByteByByte) {
  auto gbk = Transcoder::convert("utf-8", "gbk", "hi 😀!");
  ASSERT_TRUE(gbk);
  EXPECT_EQ(*gbk, "hi \\xF0\\x9F\\x98\\x80!");
}

TEST(Transcoder, NonAsciiTargetDropsInvalidBytes) {
  Transcoder t = open_or_die("utf-8", "UTF-16LE");
  const std::string out = feed_and_finish(t,
                                          "A\xFF"
                                          "B");
  EXPECT_EQ(out, std::string("A\0B\0", 4));
  EXPECT_EQ(t.invalid_bytes(), 1u);
}

TEST(Transcoder, StatefulTargetGetsResetSequenceAtFinish) {
  Transcoder t = open_or_die("utf-8", "iso-2022-jp");
  std::string out = t.feed("日");
  EXPECT_EQ(out, "\x1b$BF|");
  out += t.finish();
  EXPECT_EQ(out, "\x1b$BF|\x1b(B");
}

TEST(Transcoder, UnknownEncodingIsAnError) {
  auto from = Transcoder::open("no-such-encoding", "utf-8");
  ASSERT_FALSE(from);
  EXPECT_EQ(from.error().code(), Errc::bad_encoding);
  EXPECT_EQ(from.error().context(), "encoding 'no-such-encoding'");

  auto to = Transcoder::open("gbk", "klingon");
  ASSERT_FALSE(to);
  EXPECT_EQ(to.error().code(), Errc::bad_encoding);
  EXPECT_EQ(to.error().context(), "encoding 'klingon'");

  auto converted = Transcoder::convert("utf-8", "nope", "text");
  ASSERT_FALSE(converted);
  EXPECT_EQ(converted.error().code(), Errc::bad_encoding);
}

TEST(Transcoder, EmptyNamesAndSuffixesAreRefused) {
  for (auto [from, to] :
       {std::pair{"", "utf-8"}, std::pair{"utf-8", " "}, std::pair{"utf-8", "ascii//TRANSLIT"},
        std::pair{"gbk//IGNORE", "utf-8"}}) {
    auto t = Transcoder::open(from, to);
    ASSERT_FALSE(t) << from << " -> " << to;
    EXPECT_EQ(t.error().code(), Errc::bad_encoding);
  }
}

TEST(Transcoder, NamesAreCaseInsensitive) {
  EXPECT_EQ(Transcoder::canonical_name("utf8"), "UTF-8");
  EXPECT_EQ(Transcoder::canonical_name(" Utf-8 "), "UTF-8");
  EXPECT_EQ(Transcoder::canonical_name("gbk"), "GBK");
  EXPECT_EQ(Transcoder::canonical_name("gb18030"), "GB18030");
  EXPECT_EQ(Transcoder::canonical_name("big5"), "BIG5");
  for (const char* name : {"utf-8", "UTF8", "Utf8", "gbk", "GbK", "gb18030", "big5", "latin1"}) {
    auto t = Transcoder::open(name, "utf-8");
    EXPECT_TRUE(t) << name << ": " << t.error().message();
  }
  Transcoder t = open_or_die("gbk", "utf8");
  EXPECT_EQ(t.from(), "GBK");
  EXPECT_EQ(t.to(), "UTF-8");
}

TEST(Transcoder, AsciiCompatibleNamesKeepNewlineAsOneByte) {
  for (const char* name : {"utf8", "UTF-8", "gbk", "gb18030", "big5", "latin1"}) {
    EXPECT_TRUE(Transcoder::ascii_compatible(name)) << name;
  }
  // In UTF-16 and UTF-32 a 0x0A byte is half of some other character;
  // EBCDIC writes '\n' as another byte altogether.
  for (const char* name : {"utf-16", "UTF-16LE", "utf-16be", "utf-32", "ucs-2", "ebcdic-us"}) {
    EXPECT_FALSE(Transcoder::ascii_compatible(name)) << name;
  }
  for (const char* name : {"", "no-such-encoding", "utf-8//TRANSLIT"}) {
    EXPECT_FALSE(Transcoder::ascii_compatible(name)) << name;
  }
}

// Such an encoding writes the same character as other bytes after a shift,
// so its text cannot be cut into lines that each stand alone.
TEST(Transcoder, HasShiftStatesTellsEscapeSequenceEncodingsApart) {
  for (const char* name : {"utf-8", "UTF8", "gbk", "gb18030", "big5", "latin1"}) {
    EXPECT_FALSE(Transcoder::has_shift_states(name)) << name;
  }
  for (const char* name : {"ISO-2022-JP", "iso-2022-jp-2", "ISO-2022-KR", "ISO-2022-CN", "UTF-7"}) {
    EXPECT_TRUE(Transcoder::has_shift_states(name)) << name;
  }
  for (const char* name : {"", "no-such-encoding", "iso-2022-jp//TRANSLIT"}) {
    EXPECT_FALSE(Transcoder::has_shift_states(name)) << name;
  }
}

TEST(Transcoder, Utf8PassThroughKeepsValidText) {
  Transcoder t = open_or_die("utf8", "UTF-8");
  const std::string text = "plain ascii, 中文, Ελληνικά, emoji 😀 and U+10FFFF \xF4\x8F\xBF\xBF";
  EXPECT_EQ(feed_and_finish(t, text), text);
  EXPECT_EQ(t.invalid_bytes(), 0u);
}

TEST(Transcoder, Utf8SplitThreeByteCharacter) {
  Transcoder t = open_or_die("utf-8", "utf-8");
  const std::string zhong = "中";  // E4 B8 AD
  ASSERT_EQ(zhong.size(), 3u);
  EXPECT_EQ(t.feed("a" + zhong.substr(0, 1)), "a");
  EXPECT_EQ(t.pending_bytes(), 1u);
  EXPECT_EQ(t.feed(zhong.substr(1, 1)), "");
  EXPECT_EQ(t.pending_bytes(), 2u);
  EXPECT_EQ(t.feed(zhong.substr(2) + "b"), zhong + "b");
  EXPECT_EQ(t.pending_bytes(), 0u);
  EXPECT_EQ(t.invalid_bytes(), 0u);
}

TEST(Transcoder, Utf8SplitFourByteEmojiByteByByte) {
  Transcoder t = open_or_die("utf-8", "utf-8");
  const std::string emoji = "😀";  // F0 9F 98 80
  ASSERT_EQ(emoji.size(), 4u);
  std::string out;
  for (size_t i = 0; i < 3; ++i) {
    out += t.feed(emoji.substr(i, 1));
    EXPECT_EQ(out, "");
  }
  out += t.feed(emoji.substr(3));
  EXPECT_EQ(out, emoji);
  EXPECT_EQ(t.finish(), "");
  EXPECT_EQ(t.invalid_bytes(), 0u);
}

TEST(Transcoder, Utf8RandomSplitsPassThroughExactly) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "line " + std::to_string(i) + " 中文 😀 é\n";
  for (unsigned seed = 1; seed <= 5; ++seed) {
    Transcoder t = open_or_die("utf-8", "utf-8");
    EXPECT_EQ(feed_in_pieces(t, text, 5, seed), text) << "seed " << seed;
    EXPECT_EQ(t.invalid_bytes(), 0u);
  }
}

TEST(Transcoder, Utf8InvalidSequencesAreEscaped) {
  struct Case {
    std::string input;
    std::string output;
    size_t invalid;
  };
  const Case cases[] = {
      {"a\x80z", "a\\x80z", 1},                         // lone continuation byte
      {"\xC0\xAF", "\\xC0\\xAF", 2},                    // overlong '/'
      {"\xE0\x80\xAF", "\\xE0\\x80\\xAF", 3},           // overlong, 3 bytes
      {"\xED\xA0\x80", "\\xED\\xA0\\x80", 3},           // UTF-16 surrogate
      {"\xF4\x90\x80\x80", "\\xF4\\x90\\x80\\x80", 4},  // above U+10FFFF
      {"\xF5\xFF", "\\xF5\\xFF", 2},                    // never valid
      {"\xE4\xB8"
       "A",
       "\\xE4\\xB8A", 2},  // truncated, then ASCII
      {"ok\xFE"
       "ok",
       "ok\\xFEok", 1},
  };
  for (const auto& c : cases) {
    Transcoder t = open_or_die("utf-8", "utf-8");
    EXPECT_EQ(feed_and_finish(t, c.input), c.output);
    EXPECT_EQ(t.invalid_bytes(), c.invalid) << c.output;
  }
}

TEST(Transcoder, Utf8TruncatedAtFinishIsEscaped) {
  Transcoder t = open_or_die("utf-8", "utf-8");
  EXPECT_EQ(t.feed("x\xF0\x9F\x98"), "x");
  EXPECT_EQ(t.finish(), "\\xF0\\x9F\\x98");
  EXPECT_EQ(t.invalid_bytes(), 3u);
}

TEST(Transcoder, Utf8InvalidByteInsideLongAsciiRun) {
  // Exercises the 8-bytes-at-a-time ASCII scan on both sides of a bad byte.
  const std::string ascii(37, 'q');
  Transcoder t = open_or_die("utf-8", "utf-8");
  EXPECT_EQ(t.feed(ascii + "\xFF" + ascii), ascii + "\\xFF" + ascii);
  EXPECT_EQ(t.invalid_bytes(), 1u);
}

TEST(Transcoder, MovedTranscoderKeepsWorking) {
  Transcoder a = open_or_die("gbk", "utf-8");
  EXPECT_EQ(a.feed(kGbkMessage.substr(0, 3)), "收");
  Transcoder b(std::move(a));
  EXPECT_EQ(b.pending_bytes(), 1u);
  EXPECT_EQ(feed_and_finish(b, kGbkMessage.substr(3)), "到了你的訊息");
  Transcoder c = open_or_die("utf-8", "utf-8");
  c = std::move(b);
  EXPECT_EQ(feed_and_finish(c, kGbkMessage), kUtf8Message);
  EXPECT_EQ(c.from(), "GBK");
}

TEST(Transcoder, EmptyInput) {
  Transcoder t = open_or_die("gbk", "utf-8");
  EXPECT_EQ(t.feed(""), "");
  EXPECT_EQ(t.finish(), "");
  auto converted = Transcoder::convert("utf-8", "gbk", "");
  ASSERT_TRUE(converted);
  EXPECT_EQ(*converted, "");
}

// Log escaping, nick rules and the JSON writer: what outside text becomes
// on its way to a log line, a terminal or a JSON document.
#include "common/text_escape.h"
#include "common/json_writer.h"

#include <gtest/gtest.h>

#include <string>

using namespace tcpkit::cli;
using namespace std::string_literals;

TEST(Printable, EscapesControlsAndKeepsText) {
  EXPECT_EQ(printable("héllo 你好\tok"), "héllo 你好\tok");
  EXPECT_EQ(printable("a\r\nb\x1b[31m\x00"s), "a\\r\\nb\\x1b[31m\\x00");
}

// Regression: printable() dropped a trailing line break, which a message's
// log line need not show, from every field it escaped: a TLS server name
// "localhost\n" was logged as "localhost". Only a message drops its own.
TEST(Printable, ShowsATrailingLineBreakThatAMessageAloneDrops) {
  EXPECT_EQ(printable("localhost\n"), "localhost\\n");
  EXPECT_EQ(printable("x\r\n"), "x\\r\\n");
  EXPECT_EQ(without_line_break("hello\r\n"), "hello");
  EXPECT_EQ(without_line_break("hello\n"), "hello");
  EXPECT_EQ(without_line_break("a\nb\n\n"), "a\nb\n");
  EXPECT_EQ(without_line_break("hello"), "hello");
}

// Regression: DEL, C1 controls and bidi overrides passed through.
TEST(Printable, EscapesDelC1AndBidiControls) {
  EXPECT_EQ(printable("a\x7f"
                      "b"),
            "a\\x7fb");
  EXPECT_EQ(printable("a\xc2\x85"
                      "b\xc2\x9b"
                      "c"),
            "a\\u0085b\\u009bc");
  EXPECT_EQ(printable("abc\xe2\x80\xae"
                      "cba\xe2\x81\xa6!"),
            "abc\\u202ecba\\u2066!");
  EXPECT_EQ(printable("\xe2\x80\x8f"), "\\u200f");
}

// Regression: "\x1b" in a log line could be an escape or the same four
// characters typed by the client.
TEST(Printable, EscapesTheBackslashSoEscapesAreUnambiguous) {
  EXPECT_EQ(printable("\\x1b"), "\\\\x1b");
  EXPECT_NE(printable("\x1b"), printable("\\x1b"));
}

TEST(Printable, EscapesInvalidUtf8ByteByByte) {
  EXPECT_EQ(printable("ab\xff"
                      "cd"),
            "ab\\xffcd");
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");           // overlong "/"
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(printable("\xe4\xbd"), "\\xe4\\xbd");           // a cut character
}

// Regression: a megabyte of control bytes became a four-megabyte log line.
TEST(Printable, TruncatesWithAMarkerThatCountsWhatWasLeftOut) {
  const std::string hostile(1024 * 1024, '\x01');
  const std::string shown = printable(hostile);
  EXPECT_LE(shown.size(), kMaxPrintableBytes + 40);
  const size_t kept = (kMaxPrintableBytes / 4);
  const std::string marker = "...[" + std::to_string(hostile.size() - kept) + " more bytes]";
  EXPECT_TRUE(shown.ends_with(marker)) << shown.substr(shown.size() - 40);
  EXPECT_EQ(printable("abcdef", 4), "abcd...[2 more bytes]");
  EXPECT_EQ(printable("你好", 4), "你...[3 more bytes]");  // never half a character
}

TEST(OneLine, EscapesControlsButKeepsBackslashes) {
  EXPECT_EQ(one_line("name \\x41\nforged"), "name \\x41\\nforged");
}

TEST(Utf8, TailOfACutCharacter) {
  EXPECT_EQ(incomplete_utf8_tail("ab"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("a\xe4"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("a\xe4\xbd"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("a\xe4\xbd\xa0"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\xf0\x9f\x98"), 3u);
  EXPECT_TRUE(valid_utf8("你好"));
  EXPECT_FALSE(valid_utf8("\xff"));
}

// Regression: nicks were not checked at all.
TEST(Nick, RulesAreUtf8NoControlsAtMost32Characters) {
  EXPECT_FALSE(nick_problem("alice"));
  EXPECT_FALSE(nick_problem("小明"));
  EXPECT_FALSE(nick_problem(std::string(32, 'x')));
  EXPECT_TRUE(nick_problem(std::string(33, 'x')));
  EXPECT_TRUE(nick_problem(""));
  EXPECT_TRUE(nick_problem("\xff"));
  EXPECT_TRUE(nick_problem("a\x1b[31m"));
  EXPECT_TRUE(nick_problem("a\rb"));
  EXPECT_TRUE(nick_problem("a\xc2\x85"));
  EXPECT_TRUE(nick_problem("a\xe2\x80\xae"));
}

// Regression: "/nick 127.0.0.1:9599" was taken, and a member who later
// connected from that address joined under the same name.
TEST(Nick, AddressShapedNicksAreRefused) {
  for (const char* nick : {"127.0.0.1:9599", "[::1]:5000", "[fe80::1%eth0]:22", "localhost:80",
                           "x:0", "unix:/tmp/chat.sock", "UNIX:(unnamed)", "unix:"}) {
    auto why = nick_problem(nick);
    ASSERT_TRUE(why) << nick;
    EXPECT_NE(why->find("cannot look like an address"), std::string::npos) << *why;
  }
  for (const char* nick : {"bob:", "a:b", "12:30pm", "unixfan", "port80", "::"})
    EXPECT_FALSE(nick_problem(nick)) << nick;
}

// Regression: U+2028 and U+2029 reached text logs raw, a line break to some
// log viewers.
TEST(Printable, LineAndParagraphSeparatorsAreEscaped) {
  EXPECT_EQ(printable("a\xe2\x80\xa8"
                      "b\xe2\x80\xa9"
                      "c"),
            "a\\u2028b\\u2029c");
}

// Regression: a blank or invisible nick read as no nick, or as another.
TEST(Nick, NoSpacesOrCharactersThatShowNothing) {
  EXPECT_TRUE(nick_problem(" "));
  EXPECT_TRUE(nick_problem("a b"));
  EXPECT_TRUE(nick_problem("\xe3\x80\x80"));   // U+3000
  EXPECT_TRUE(nick_problem("a\xe2\x80\x8b"));  // U+200B
  EXPECT_TRUE(
      nick_problem("\xef\xbb\xbf"
                   "alice"));              // U+FEFF
  EXPECT_TRUE(nick_problem("a\xc2\xa0"));  // U+00A0
  EXPECT_FALSE(nick_problem("小明_2"));
}

// Regression: chat lines carried CR and ESC sequences to every terminal.
TEST(ChatText, ControlsEscapedTheRestAsTyped) {
  EXPECT_EQ(chat_text("hi\r<bob> x\x1b[K\x7f", true), "hi\\x0d<bob> x\\x1b[K\\x7f");
  EXPECT_EQ(chat_text("\xc2\x9b"
                      "2J \xe2\x80\xae"
                      "a\tb",
                      true),
            "\\u009b2J \\u202ea\tb");
  EXPECT_EQ(chat_text("back\\slash \xff \xe4\xbd\xa0", true), "back\\slash \xff \xe4\xbd\xa0");
  // A legacy encoding: single bytes only; GBK's 0x81 0x40 stays whole.
  EXPECT_EQ(chat_text("\x81\x40\x1b\x9b", false), "\x81\x40\\x1b\x9b");
}

// Regression: JSON log lines passed invalid UTF-8 through.
TEST(JsonWriter, AnyBytesInValidJsonOut) {
  Json doc = {{"name", "a\xff\"\\\x01\n"}, {"n", 3}};
  const std::string text = json_text(doc);
  EXPECT_EQ(text, "{\"name\":\"a\xef\xbf\xbd\\\"\\\\\\u0001\\n\",\"n\":3}");
  EXPECT_TRUE(valid_utf8(text));
  EXPECT_EQ(Json::parse(text)["name"], "a\xef\xbf\xbd\"\\\x01\n");
}

// A line relayed through --cluster goes by its member's name: a nick, or the
// address a member without one goes by, which no nick may look like and
// which may be longer than a nick (an IPv6 address, a socket path).
TEST(Nick, AMemberOfAnotherInstanceMayGoByItsAddress) {
  EXPECT_EQ(member_name_problem("alice"), std::nullopt);
  EXPECT_EQ(member_name_problem("127.0.0.1:41172"), std::nullopt);
  EXPECT_EQ(member_name_problem("[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), std::nullopt);
  EXPECT_EQ(member_name_problem("unix:/run/tcpkit/a-rather-long-socket-name.sock"), std::nullopt);
  EXPECT_NE(nick_problem("127.0.0.1:41172"), std::nullopt);
  EXPECT_NE(member_name_problem("bad nick"), std::nullopt);
  EXPECT_NE(member_name_problem("1.2.3.4\x1b[2J:80"), std::nullopt);
  EXPECT_NE(member_name_problem("unix:/" + std::string(kMaxAddressNameBytes, 'x')), std::nullopt);
  EXPECT_NE(member_name_problem(std::string(kMaxNickChars + 1, 'a')), std::nullopt);
}

// Regression: "alice" followed by a tag character (U+E0041), or with a
// variation selector, a Hangul filler or the Braille blank in it, passed for
// "alice" while "alice" was taken; so did a nick starting with a combining
// mark, which lands on the "<" before it.
TEST(Nick, NoInvisibleFormatCharactersOrLeadingCombiningMark) {
  EXPECT_TRUE(nick_problem("alice\xf3\xa0\x81\x81"));  // U+E0041 (tag A)
  EXPECT_TRUE(nick_problem("alice\xf3\xa0\x80\x81"));  // U+E0001 (language tag)
  EXPECT_TRUE(nick_problem("alice\xf3\xa0\x81\xbf"));  // U+E007F (cancel tag)
  EXPECT_TRUE(nick_problem("alice\xf0\x9d\x85\xb3"));  // U+1D173
  EXPECT_TRUE(nick_problem("alice\xf0\x9d\x85\xba"));  // U+1D17A
  EXPECT_TRUE(nick_problem("alice\xef\xb8\x8f"));      // U+FE0F
  EXPECT_TRUE(nick_problem("alice\xef\xb8\x80"));      // U+FE00
  EXPECT_TRUE(nick_problem("alice\xf3\xa0\x84\x80"));  // U+E0100
  EXPECT_TRUE(nick_problem("alice\xf3\xa0\x87\xaf"));  // U+E01EF
  EXPECT_TRUE(nick_problem("alice\xe2\xa0\x80"));      // U+2800
  EXPECT_TRUE(nick_problem("alice\xe1\x9e\xb4"));      // U+17B4
  EXPECT_TRUE(nick_problem("alice\xe1\x9e\xb5"));      // U+17B5
  EXPECT_TRUE(nick_problem("\xe1\x85\x9f"));           // U+115F
  EXPECT_TRUE(nick_problem("\xe1\x85\xa0"));           // U+1160
  EXPECT_TRUE(nick_problem("\xe3\x85\xa4"));           // U+3164
  EXPECT_TRUE(nick_problem("\xef\xbe\xa0"));           // U+FFA0
  EXPECT_TRUE(
      nick_problem("\xcc\x81"
                   "alice"));  // U+0301 first
  EXPECT_TRUE(
      nick_problem("\xe2\x83\x9d"
                   "x"));  // U+20DD first
  EXPECT_TRUE(
      member_name_problem("\xcc\x81"
                          "alice"));
  // A combining mark after a letter is how many names are written.
  EXPECT_FALSE(nick_problem("Jose\xcc\x81"));
  EXPECT_FALSE(nick_problem("\xe2\x9d\xa4"));  // U+2764, no selector
}

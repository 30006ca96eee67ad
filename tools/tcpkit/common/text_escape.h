// Text from outside (a client's message, a TLS server name, a chat nick, a
// Redis error) made safe for a text log line or a terminal.
//
// Design decision 10: such text is hostile. Written raw, a newline forges a
// log line, an ESC sequence recolours or rewrites the operator's terminal, and
// a bidi override makes a line read differently from what it holds. The
// escapes are unambiguous: a backslash in the text is written as "\\", so
// "\x1b" in a log line is always an escaped byte, never the same four
// characters typed literally.
//
// Plain functions on values; any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace tcpkit::cli {

// A log line shows at most this many bytes of one outside text; a megabyte of
// control bytes must not become a four-megabyte log line.
constexpr size_t kMaxPrintableBytes = 4096;

// One outside field for a text log: writes "\\" for a backslash, "\n", "\r", "\xNN" for the other
// C0 controls, DEL and each byte of invalid UTF-8, "\uNNNN" for C1 controls, bidi controls (U+200E,
// U+200F, U+061C, U+202A-U+202E, U+2066-U+2069) and the line and paragraph separators (U+2028,
// U+2029); a tab and all other valid UTF-8 pass. Output past `max_bytes` is cut at a character and
// ends in "...[N more bytes]", N counting the input bytes left out.
//
// Backslash::keep is for text that holds escapes already: a transcoder's
// "\xHH" for bytes invalid in a non-UTF-8 wire encoding.
enum class Backslash { escape, keep };
std::string printable(std::string_view text, size_t max_bytes = kMaxPrintableBytes,
                      Backslash backslash = Backslash::escape);

// A message without the one "\n" or "\r\n" that ends it, which its log line
// need not show; any other line break stays, for printable() to escape.
std::string_view without_line_break(std::string_view text);

// The logger's safety net for a whole text line that its callers composed:
// the same escapes as printable() except that a backslash stays as it is
// (the line's outside fields went through printable() already), no
// truncation, and no trailing line break dropped.
std::string one_line(std::string_view text);

// The bytes of the well-formed UTF-8 character that starts `text` (1 to
// 4), or 0 when it does not start with one.
size_t utf8_character_length(std::string_view text);

// True when `text` is well-formed UTF-8 (no overlongs, no surrogates, nothing
// above U+10FFFF).
bool valid_utf8(std::string_view text);

// How many bytes at the end of `text` begin a UTF-8 character that the next
// read may complete (0 to 3).
size_t incomplete_utf8_tail(std::string_view text);

// Why `utf8` cannot be a chat nick, or nullopt when it can: it must be
// valid UTF-8 of 1 to kMaxNickChars characters with no control characters
// (C0, DEL, C1), no bidi controls, no spaces or characters that show
// nothing (no-break and ideographic spaces, zero-width ones, BOM, Hangul
// fillers, variation selectors, tag characters), no combining mark first;
// nor may it have the shape of an address (ending in ':' and digits, or starting with
// "unix:"), the name a member goes by until it takes a nick.
constexpr size_t kMaxNickChars = 32;
std::optional<std::string> nick_problem(std::string_view utf8);

// Why `utf8` cannot be the name of a member of another instance (a line
// relayed through --cluster), or nullopt: a nick, or the address a member
// without one goes by (the character rules of a nick, up to
// kMaxAddressNameBytes: an IPv6 address or a socket path is longer).
constexpr size_t kMaxAddressNameBytes = 128;
std::optional<std::string> member_name_problem(std::string_view utf8);

// A chat line's text (no line break) as other members' terminals get it:
// C0 controls but tab, and DEL, become "\xNN"; with `utf8`, C1 and bidi
// controls become "\uNNNN". All else, invalid bytes and backslashes too,
// passes as typed: the line is for people to read. Without `utf8` (a
// legacy wire encoding: GBK, Big5...) only single bytes are looked at, which
// in those encodings are never part of a wider character when under 0x20.
std::string chat_text(std::string_view text, bool utf8);

}  // namespace tcpkit::cli

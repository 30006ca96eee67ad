#include "common/text_escape.h"

#include <fmt/core.h>

#include <cstdint>

namespace tcpkit::cli {
namespace {

// Decodes the UTF-8 character at the front of `s`: its code point and
// length, or length 0 when the bytes there are not a well-formed character.
struct Decoded {
  uint32_t code_point = 0;
  size_t length = 0;
};

Decoded decode(std::string_view s) {
  const auto byte = [&s](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return {lead, 1};
  size_t length = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2, cp = lead & 0x1F, min = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, cp = lead & 0x0F, min = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, cp = lead & 0x07, min = 0x10000;
  } else {
    return {};
  }
  if (s.size() < length) return {};
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return {};
    cp = (cp << 6) | (byte(i) & 0x3F);
  }
  // Overlong forms, UTF-16 surrogates and code points past Unicode are
  // refused as RFC 3629 requires: each is a classic filter bypass.
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {};
  return {cp, length};
}

bool is_control(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

// Characters that reorder the text around them on a terminal or in a
// browser (the "Trojan Source" characters, CVE-2021-42574).
bool is_bidi_control(uint32_t cp) {
  return cp == 0x061C || cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

// Unicode's own line and paragraph separators: a line break to some log
// viewers and to JavaScript, so a way to forge a log line there.
bool is_line_separator(uint32_t cp) {
  return cp == 0x2028 || cp == 0x2029;
}

// Spaces and characters that show nothing: a nick of them, or with them,
// reads as another nick or as none. Besides the spaces and zero-width
// characters: the Hangul fillers (U+115F, U+1160, U+3164, U+FFA0), the
// Braille blank (U+2800), the Khmer inherent vowels (U+17B4, U+17B5), the
// variation selectors (U+FE00-FE0F, U+E0100-E01EF), the musical format
// characters (U+1D173-1D17A) and the tag characters (U+E0000-E007F).
bool is_space_or_invisible(uint32_t cp) {
  return cp == 0x20 || cp == 0xA0 || cp == 0xAD || cp == 0x034F || cp == 0x115F || cp == 0x1160 ||
         cp == 0x1680 || cp == 0x17B4 || cp == 0x17B5 || cp == 0x180E ||
         (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
         (cp >= 0x205F && cp <= 0x206F) || cp == 0x2800 || cp == 0x3000 || cp == 0x3164 ||
         (cp >= 0xFE00 && cp <= 0xFE0F) || cp == 0xFEFF || cp == 0xFFA0 ||
         (cp >= 0xFFF9 && cp <= 0xFFFB) || (cp >= 0x1D173 && cp <= 0x1D17A) ||
         (cp >= 0xE0000 && cp <= 0xE007F) || (cp >= 0xE0100 && cp <= 0xE01EF);
}

// The blocks of combining marks that apply to any script: a nick that
// starts with one puts it on whatever comes before the nick ("<" in a chat
// line), so that U+0301 then "alice" reads as "alice" with an accent on
// the "<". Marks of one script
// (Devanagari's vowel signs...) are not listed: without a Unicode
// database, these blocks are the ones made to combine with Latin text.
bool is_combining_mark(uint32_t cp) {
  return (cp >= 0x0300 && cp <= 0x036F) || (cp >= 0x0483 && cp <= 0x0489) ||
         (cp >= 0x1AB0 && cp <= 0x1AFF) || (cp >= 0x1DC0 && cp <= 0x1DFF) ||
         (cp >= 0x20D0 && cp <= 0x20FF) || (cp >= 0x3099 && cp <= 0x309A) ||
         (cp >= 0xFE20 && cp <= 0xFE2F);
}

// The shape of the name a chat member goes by until it takes a nick: its
// address, "HOST:PORT" ("127.0.0.1:41172", "[::1]:5000") or "unix:PATH".
// Any text ending in ':' and digits counts, whether or not it parses: what
// matters is that no member's address can ever be a nick.
bool looks_like_address(std::string_view text) {
  const size_t colon = text.rfind(':');
  if (colon != std::string_view::npos && colon + 1 < text.size() &&
      text.find_first_not_of("0123456789", colon + 1) == std::string_view::npos)
    return true;
  constexpr std::string_view kUnix = "unix:";
  if (text.size() < kUnix.size()) return false;
  for (size_t i = 0; i < kUnix.size(); ++i) {
    const char c = text[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kUnix[i]) return false;
  }
  return true;
}

std::string escape(std::string_view text, bool escape_backslash, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 16);
  size_t pos = 0;
  while (pos < text.size()) {
    std::string piece;
    Decoded d = decode(text.substr(pos));
    const unsigned char c = static_cast<unsigned char>(text[pos]);
    if (d.length == 0) {
      piece = fmt::format("\\x{:02x}", c);
      d.length = 1;
    } else if (d.code_point == '\\') {
      piece = escape_backslash ? "\\\\" : "\\";
    } else if (d.code_point == '\n') {
      piece = "\\n";
    } else if (d.code_point == '\r') {
      piece = "\\r";
    } else if (d.code_point == '\t') {
      piece = "\t";
    } else if (d.code_point < 0x80 && is_control(d.code_point)) {
      piece = fmt::format("\\x{:02x}", c);
    } else if (is_control(d.code_point) || is_bidi_control(d.code_point) ||
               is_line_separator(d.code_point)) {
      piece = fmt::format("\\u{:04x}", d.code_point);
    } else {
      piece = text.substr(pos, d.length);
    }
    if (out.size() + piece.size() > max_bytes) {
      out += fmt::format("...[{} more bytes]", text.size() - pos);
      return out;
    }
    out += piece;
    pos += d.length;
  }
  return out;
}

}  // namespace

std::string printable(std::string_view text, size_t max_bytes, Backslash backslash) {
  return escape(text, backslash == Backslash::escape, max_bytes);
}

std::string_view without_line_break(std::string_view text) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  return text;
}

std::string one_line(std::string_view text) {
  return escape(text, false, SIZE_MAX);
}

size_t utf8_character_length(std::string_view text) {
  return text.empty() ? 0 : decode(text).length;
}

bool valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const size_t length = utf8_character_length(text.substr(pos));
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

size_t incomplete_utf8_tail(std::string_view text) {
  for (size_t i = 1; i <= 3 && i <= text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[text.size() - i]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t length = (c & 0xE0) == 0xC0   ? 2
                          : (c & 0xF0) == 0xE0 ? 3
                          : (c & 0xF8) == 0xF0 ? 4
                                               : 1;
    return length > i ? i : 0;
  }
  return 0;
}

namespace {

// The characters of a name: what nick_problem() and member_name_problem()
// share; counts them into *chars.
std::optional<std::string> name_characters_problem(std::string_view utf8, size_t* chars) {
  if (utf8.empty()) return "a nick cannot be empty";
  if (is_combining_mark(decode(utf8).code_point))
    return "a nick cannot start with a combining mark";
  for (size_t pos = 0; pos < utf8.size(); ++*chars) {
    Decoded d = decode(utf8.substr(pos));
    if (d.length == 0) return "a nick must be valid text in the server's encoding";
    if (is_control(d.code_point) || is_bidi_control(d.code_point))
      return "a nick cannot hold control characters";
    if (is_space_or_invisible(d.code_point))
      return "a nick cannot hold spaces or invisible characters";
    pos += d.length;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> member_name_problem(std::string_view utf8) {
  if (!looks_like_address(utf8)) return nick_problem(utf8);
  size_t chars = 0;
  if (auto problem = name_characters_problem(utf8, &chars)) return problem;
  if (utf8.size() > kMaxAddressNameBytes)
    return fmt::format("an address is at most {} bytes", kMaxAddressNameBytes);
  return std::nullopt;
}

std::optional<std::string> nick_problem(std::string_view utf8) {
  size_t chars = 0;
  if (auto problem = name_characters_problem(utf8, &chars)) return problem;
  if (chars > kMaxNickChars) return fmt::format("a nick is at most {} characters", kMaxNickChars);
  // A member who connects later from that address would go by the same name.
  if (looks_like_address(utf8))
    return "a nick cannot look like an address (HOST:PORT or unix:PATH), which members without "
           "a nick go by";
  return std::nullopt;
}

std::string chat_text(std::string_view text, bool utf8) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const auto c = static_cast<unsigned char>(text[pos]);
    Decoded d = utf8 ? decode(text.substr(pos)) : Decoded{c, 1};
    if (d.length == 0) d = {0xFFFD, 1};  // an invalid byte: no control, passes
    if (d.code_point < 0x80 && is_control(d.code_point) && d.code_point != '\t') {
      out += fmt::format("\\x{:02x}", c);
    } else if (utf8 && d.code_point >= 0x80 &&
               (is_control(d.code_point) || is_bidi_control(d.code_point))) {
      out += fmt::format("\\u{:04x}", d.code_point);
    } else {
      out.append(text.substr(pos, d.length));
    }
    pos += d.length;
  }
  return out;
}

}  // namespace tcpkit::cli

/// \file
/// Transcoder: streaming text conversion between encodings (GBK <-> UTF-8 and
/// anything else glibc's iconv knows), for a byte stream that arrives in
/// arbitrary pieces.
///
/// One Transcoder per direction of one stream; it owns its iconv descriptor
/// (kept out of this header: iconv is how, not what). Move-only,
/// not thread-safe: only its owner (usually a connection's loop thread) calls it.
///
/// TCP has no message boundaries, so a multibyte character often arrives split
/// across two reads. feed() keeps an incomplete sequence at the end of its input
/// and completes it with the next call, so the split never shows in the output.
/// Invalid bytes are never fatal: each one is written as the four characters
/// "\xHH" (uppercase hex) when the target encoding is ASCII-compatible (UTF-8,
/// GBK, Big5, Latin-1, ...), dropped otherwise, and counted in invalid_bytes().
/// A character the target cannot represent (an emoji sent to GBK) is treated
/// the same way, byte by byte. Note that the escape is plain text: a literal
/// backslash followed by "x41" in the input looks the same in the output.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "tcpkit/result.h"

namespace tcpkit {

class Transcoder {
 public:
  /// Names are matched case-insensitively ("utf8", "UTF-8", "gbk", "GB18030",
  /// "big5"). An unknown name yields Errc::bad_encoding with the context
  /// "encoding 'NAME'". Suffixes such as "//TRANSLIT" are refused the same way:
  /// they change how invalid input is reported, which this class relies on.
  /// UTF-8 to UTF-8 does not use iconv: it validates and copies.
  static Result<Transcoder> open(std::string_view from, std::string_view to);

  /// One-shot conversion of a complete text, e.g. encoding a reply to GBK.
  /// Fails only for an unknown encoding; bad bytes are escaped as in feed().
  static Result<std::string> convert(std::string_view from, std::string_view to,
                                     std::string_view text);

  /// The spelling open() uses: trimmed, upper case, "UTF8" -> "UTF-8".
  static std::string canonical_name(std::string_view name);

  /// Whether `name` writes every ASCII character as that one byte (UTF-8,
  /// GBK, GB18030, Big5, Latin-1: yes; UTF-16, UTF-32, EBCDIC: no). Only
  /// then does a 0x0A byte always mean a newline, so text in it can be split
  /// into lines before it is decoded. False for a name iconv does not know.
  static bool ascii_compatible(std::string_view name);

  /// Whether `name` switches between character sets with escape or shift
  /// sequences (ISO-2022-JP, -JP-2, -CN, -KR, HZ, UTF-7) rather than writing
  /// every character the same way wherever it stands (UTF-8, GBK, Big5: no).
  /// Text in such an encoding cannot be cut into pieces that each stand
  /// alone: a piece depends on the shifts before it. Probed with a few
  /// characters such encodings carry, one stream each: a control byte (ESC,
  /// SO, SI) in one, or a sequence that the end of the stream adds to return
  /// to the initial state ("ESC ( B", SI, "~}", "-"), gives it away; a
  /// character the encoding lacks proves nothing. False for a name iconv
  /// does not know.
  static bool has_shift_states(std::string_view name);

  Transcoder(Transcoder&& other) noexcept;
  Transcoder& operator=(Transcoder&& other) noexcept;
  Transcoder(const Transcoder&) = delete;
  Transcoder& operator=(const Transcoder&) = delete;
  ~Transcoder();

  /// Converts as much of `bytes` (after any bytes held from the previous call)
  /// as forms whole characters; an incomplete character at the end is held.
  std::string feed(std::string_view bytes);
  /// The same, appending to *out so a caller can reuse one string.
  void feed(std::string_view bytes, std::string* out);

  /// End of stream: held bytes can no longer be completed, so they are
  /// escaped; a stateful target gets its reset sequence. The Transcoder is
  /// then ready for a new stream (invalid_bytes() keeps counting).
  std::string finish();
  void finish(std::string* out);

  /// Bytes escaped (or dropped) so far, over the Transcoder's lifetime.
  size_t invalid_bytes() const { return invalid_bytes_; }
  /// Bytes held back, waiting for the rest of their character.
  size_t pending_bytes() const { return pending_.size(); }
  const std::string& from() const { return from_; }
  const std::string& to() const { return to_; }

 private:
  struct Iconv;  ///< the iconv_t, defined in transcoder.cpp

  Transcoder(std::string from, std::string to, std::unique_ptr<Iconv> iconv, bool ascii_compatible);

  void convert_chunk(std::string_view in, std::string* out);
  void iconv_chunk(std::string_view in, std::string* out);
  void validate_utf8(std::string_view in, std::string* out);
  /// Writes "\xHH" for one bad byte at out[*used] (growing out as needed).
  void escape_byte(unsigned char byte, std::string* out, size_t* used);

  std::string from_;
  std::string to_;
  /// Null for the UTF-8 -> UTF-8 path and in a moved-from object.
  std::unique_ptr<Iconv> iconv_;
  bool utf8_passthrough_;
  bool ascii_compatible_;
  std::string pending_;
  size_t invalid_bytes_ = 0;
};

}  // namespace tcpkit

#include "tcpkit/transcoder.h"

#include <iconv.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

// iconv reports through errno like a system call, so this file reads errno
// too, immediately after each iconv call and nowhere else.

namespace tcpkit {
namespace {

// iconv_open's failure value, (iconv_t)-1 by its specification: the integer
// turned pointer is the API's, not a pointer this code forges.
// NOLINTNEXTLINE(performance-no-int-to-ptr)
const iconv_t kNoIconv = reinterpret_cast<iconv_t>(-1);
constexpr size_t kIconvFailed = static_cast<size_t>(-1);

// Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no
// surrogates, nothing above U+10FFFF); 0 when p starts no valid sequence; -1
// when the `avail` bytes are a valid prefix of a longer sequence.
int utf8_sequence(const unsigned char* p, size_t avail) {
  const unsigned char lead = p[0];
  if (lead < 0x80) return 1;
  int length = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  // A continuation byte, an overlong 2-byte lead, or a lead above U+10FFFF.
  if (lead < 0xC2 || lead >= 0xF5) return 0;
  if (lead < 0xE0) {
    length = 2;
  } else if (lead < 0xF0) {
    length = 3;
    if (lead == 0xE0) lo = 0xA0;  // overlong
    if (lead == 0xED) hi = 0x9F;  // UTF-16 surrogates
  } else {
    length = 4;
    if (lead == 0xF0) lo = 0x90;  // overlong
    if (lead == 0xF4) hi = 0x8F;  // above U+10FFFF
  }
  for (int k = 1; k < length; ++k) {
    if (static_cast<size_t>(k) >= avail) return -1;
    if (p[k] < lo || p[k] > hi) return 0;
    lo = 0x80;
    hi = 0xBF;
  }
  return length;
}

// Whether text in `to` writes ASCII characters as the same single bytes, so
// an ASCII escape can be spliced into the output as it is.
bool is_ascii_compatible(const std::string& to) {
  if (to == "UTF-8") return true;
  iconv_t probe = iconv_open(to.c_str(), "ASCII");
  if (probe == kNoIconv) return false;
  char text[] = "\\x09AFaf";
  char converted[64];
  char* in = text;
  size_t in_left = sizeof text - 1;
  char* out = converted;
  size_t out_left = sizeof converted;
  const size_t rc = iconv(probe, &in, &in_left, &out, &out_left);
  iconv_close(probe);
  const auto written = static_cast<size_t>(out - converted);
  return rc != kIconvFailed && written == sizeof text - 1 &&
         std::memcmp(converted, text, written) == 0;
}

bool iconv_knows(const std::string& name) {
  iconv_t cd = iconv_open("UTF-8", name.c_str());
  if (cd == kNoIconv) return false;
  iconv_close(cd);
  return true;
}

}  // namespace

// Closes the descriptor with the Transcoder that owns it.
struct Transcoder::Iconv {
  explicit Iconv(iconv_t descriptor) : cd(descriptor) {}
  ~Iconv() { iconv_close(cd); }
  Iconv(const Iconv&) = delete;
  Iconv& operator=(const Iconv&) = delete;

  iconv_t cd;
};

std::string Transcoder::canonical_name(std::string_view name) {
  while (!name.empty() && (name.front() == ' ' || name.front() == '\t')) name.remove_prefix(1);
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
  std::string upper(name);
  for (char& c : upper) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  if (upper == "UTF8") return "UTF-8";
  return upper;
}

bool Transcoder::ascii_compatible(std::string_view name) {
  const std::string canonical = canonical_name(name);
  if (canonical.empty() || canonical.find('/') != std::string::npos) return false;
  return is_ascii_compatible(canonical);
}

bool Transcoder::has_shift_states(std::string_view name) {
  auto encoder = open("UTF-8", name);
  if (!encoder) return false;
  for (const std::string_view character :
       {"\u00e9", "\u0416", "\u03b1", "\u4e2d", "\u65e5", "\ud55c", "\u20ac"}) {
    const size_t invalid = encoder->invalid_bytes();
    const std::string encoded = encoder->feed(character);
    const std::string reset = encoder->finish();
    if (encoder->invalid_bytes() != invalid) continue;
    if (!reset.empty() || std::any_of(encoded.begin(), encoded.end(), [](char byte) {
          return static_cast<unsigned char>(byte) < 0x20;
        }))
      return true;
  }
  return false;
}

Result<Transcoder> Transcoder::open(std::string_view from, std::string_view to) {
  std::string from_name = canonical_name(from);
  std::string to_name = canonical_name(to);
  // An empty name means "the locale's charset" to iconv, and '/' starts a
  // //TRANSLIT or //IGNORE suffix; neither is what a user of this class means.
  for (const auto& [given, name] : {std::pair{from, &from_name}, std::pair{to, &to_name}}) {
    if (name->empty() || name->find('/') != std::string::npos) {
      return Error(Errc::bad_encoding, "encoding '" + std::string(given) + "'");
    }
  }
  if (from_name == "UTF-8" && to_name == "UTF-8") {
    return Transcoder(std::move(from_name), std::move(to_name), nullptr, true);
  }
  iconv_t cd = iconv_open(to_name.c_str(), from_name.c_str());
  if (cd == kNoIconv) {
    const int err = errno;
    if (err != EINVAL) return Error::from_errno(err, "iconv_open " + from_name + " -> " + to_name);
    // iconv does not say which of the two names it lacks; ask about one.
    const std::string_view unknown = iconv_knows(from_name) ? to : from;
    return Error(Errc::bad_encoding, "encoding '" + std::string(unknown) + "'");
  }
  const bool ascii = is_ascii_compatible(to_name);
  return Transcoder(std::move(from_name), std::move(to_name), std::make_unique<Iconv>(cd), ascii);
}

Result<std::string> Transcoder::convert(std::string_view from, std::string_view to,
                                        std::string_view text) {
  auto transcoder = open(from, to);
  if (!transcoder) return transcoder.error();
  std::string out;
  transcoder->feed(text, &out);
  transcoder->finish(&out);
  return out;
}

Transcoder::Transcoder(std::string from, std::string to, std::unique_ptr<Iconv> iconv,
                       bool ascii_compatible)
    : from_(std::move(from)),
      to_(std::move(to)),
      iconv_(std::move(iconv)),
      utf8_passthrough_(iconv_ == nullptr),
      ascii_compatible_(ascii_compatible) {}

Transcoder::Transcoder(Transcoder&& other) noexcept
    : from_(std::move(other.from_)),
      to_(std::move(other.to_)),
      iconv_(std::move(other.iconv_)),
      utf8_passthrough_(std::exchange(other.utf8_passthrough_, false)),
      ascii_compatible_(other.ascii_compatible_),
      pending_(std::move(other.pending_)),
      invalid_bytes_(std::exchange(other.invalid_bytes_, 0)) {}

Transcoder& Transcoder::operator=(Transcoder&& other) noexcept {
  if (this == &other) return *this;
  from_ = std::move(other.from_);
  to_ = std::move(other.to_);
  iconv_ = std::move(other.iconv_);  // closes ours
  utf8_passthrough_ = std::exchange(other.utf8_passthrough_, false);
  ascii_compatible_ = other.ascii_compatible_;
  pending_ = std::move(other.pending_);
  invalid_bytes_ = std::exchange(other.invalid_bytes_, 0);
  return *this;
}

// Out of line: Iconv is incomplete in the header.
Transcoder::~Transcoder() = default;

std::string Transcoder::feed(std::string_view bytes) {
  std::string out;
  feed(bytes, &out);
  return out;
}

void Transcoder::feed(std::string_view bytes, std::string* out) {
  assert(iconv_ != nullptr || utf8_passthrough_);  // not a moved-from object
  if (pending_.empty()) {
    convert_chunk(bytes, out);
    return;
  }
  // Held bytes go first. They are at most one character's worth, but the
  // rest of the input is copied along so iconv sees one contiguous run.
  std::string joined = std::move(pending_);
  pending_.clear();
  joined.append(bytes);
  convert_chunk(joined, out);
}

std::string Transcoder::finish() {
  std::string out;
  finish(&out);
  return out;
}

void Transcoder::finish(std::string* out) {
  size_t used = out->size();
  for (char c : pending_) escape_byte(static_cast<unsigned char>(c), out, &used);
  pending_.clear();
  if (iconv_) {
    // A null input asks iconv for the shift sequence that returns a stateful
    // target (ISO-2022-JP, ...) to its initial state, and resets it.
    char reset[32];
    char* reset_out = reset;
    size_t reset_left = sizeof reset;
    if (iconv(iconv_->cd, nullptr, nullptr, &reset_out, &reset_left) != kIconvFailed) {
      out->resize(used);
      out->append(reset, static_cast<size_t>(reset_out - reset));
      used = out->size();
    }
  }
  out->resize(used);
}

void Transcoder::convert_chunk(std::string_view in, std::string* out) {
  if (utf8_passthrough_) {
    validate_utf8(in, out);
  } else {
    iconv_chunk(in, out);
  }
}

void Transcoder::iconv_chunk(std::string_view in, std::string* out) {
  // iconv's input pointer is non-const for historical reasons; it only reads.
  char* in_ptr = const_cast<char*>(in.data());
  size_t in_left = in.size();
  size_t used = out->size();
  // Most conversions grow text by at most half (GBK's 2 bytes -> UTF-8's 3);
  // E2BIG below handles the rest.
  out->resize(used + in_left + in_left / 2 + 16);
  while (in_left > 0) {
    char* out_ptr = out->data() + used;
    size_t out_left = out->size() - used;
    const size_t rc = iconv(iconv_->cd, &in_ptr, &in_left, &out_ptr, &out_left);
    const int err = rc == kIconvFailed ? errno : 0;
    used = static_cast<size_t>(out_ptr - out->data());
    if (rc != kIconvFailed) break;
    if (err == E2BIG) {
      out->resize(out->size() + in_left * 2 + 16);
      continue;
    }
    if (err == EINVAL) {
      // An incomplete character at the end: hold it for the next feed().
      pending_.assign(in_ptr, in_left);
      break;
    }
    // EILSEQ: a byte that starts no valid character (or one the target cannot
    // represent). Escape it and resynchronise on the next byte.
    escape_byte(static_cast<unsigned char>(*in_ptr), out, &used);
    ++in_ptr;
    --in_left;
  }
  out->resize(used);
}

void Transcoder::validate_utf8(std::string_view in, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  const size_t n = in.size();
  size_t i = 0;
  size_t run_start = 0;  // first byte of the valid run not yet copied
  out->reserve(out->size() + n);
  while (i < n) {
    // Skip ASCII eight bytes at a time: most protocol text is ASCII.
    while (i + 8 <= n) {
      uint64_t word = 0;
      std::memcpy(&word, p + i, sizeof word);
      if (word & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    const int length = utf8_sequence(p + i, n - i);
    if (length > 0) {
      i += static_cast<size_t>(length);
      continue;
    }
    out->append(in.data() + run_start, i - run_start);
    if (length < 0) {
      pending_.assign(in.data() + i, n - i);
      return;
    }
    size_t used = out->size();
    escape_byte(p[i], out, &used);
    out->resize(used);
    ++i;
    run_start = i;
  }
  out->append(in.data() + run_start, n - run_start);
}

void Transcoder::escape_byte(unsigned char byte, std::string* out, size_t* used) {
  ++invalid_bytes_;
  if (!ascii_compatible_) return;
  constexpr size_t kEscapeBytes = 4;
  if (out->size() - *used < kEscapeBytes) out->resize(*used + kEscapeBytes + 64);
  static constexpr char kHex[] = "0123456789ABCDEF";
  char* at = out->data() + *used;
  at[0] = '\\';
  at[1] = 'x';
  at[2] = kHex[byte >> 4];
  at[3] = kHex[byte & 0x0F];
  *used += kEscapeBytes;
}

}  // namespace tcpkit

// Fuzzes log escaping (printable, one_line) and the nick rules. Invariants:
// the output is valid UTF-8 on one line with no control character but a tab,
// no bidi control, bounded by the limit plus the marker; printable() is
// injective on short inputs' escapes (a backslash is always doubled); a
// valid nick holds no control and is at most 32 characters.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/text_escape.h"
#include "fuzz_check.h"

using namespace tcpkit::cli;

namespace {

void check_clean(std::string_view out) {
  check(valid_utf8(out), "escaped text is valid UTF-8");
  for (size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    check(c == '\t' || (c >= 0x20 && c != 0x7f), "no C0 control or DEL");
    if (c == 0xC2 && i + 1 < out.size()) {
      const auto next = static_cast<unsigned char>(out[i + 1]);
      check(next < 0x80 || next > 0x9f, "no C1 control");
    }
    if (c == 0xE2 && i + 2 < out.size()) {
      const auto b1 = static_cast<unsigned char>(out[i + 1]);
      const auto b2 = static_cast<unsigned char>(out[i + 2]);
      check(!(b1 == 0x80 && b2 >= 0xAA && b2 <= 0xAE), "no bidi embedding or override");
      check(!(b1 == 0x81 && b2 >= 0xA6 && b2 <= 0xA9), "no bidi isolate");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string shown = printable(input, 200);
  check_clean(shown);
  check(shown.size() <= 200 + 32, "printable() honours its limit");
  check_clean(one_line(input));
  // Unescaping printable()'s output gives the input back (when nothing was
  // cut): the escapes are unambiguous.
  if (shown.find("...[") == std::string::npos) {
    std::string back;
    for (size_t i = 0; i < shown.size(); ++i) {
      if (shown[i] != '\\') {
        back += shown[i];
        continue;
      }
      check(i + 1 < shown.size(), "no lone backslash at the end");
      const char kind = shown[++i];
      if (kind == '\\') {
        back += '\\';
      } else if (kind == 'n') {
        back += '\n';
      } else if (kind == 'r') {
        back += '\r';
      } else if (kind == 'x') {
        back += static_cast<char>(std::stoi(shown.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        check(kind == 'u', "only known escapes");
        const auto cp = static_cast<uint32_t>(std::stoul(shown.substr(i + 1, 4), nullptr, 16));
        i += 4;
        if (cp < 0x800) {
          back += static_cast<char>(0xC0 | (cp >> 6));
          back += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
          back += static_cast<char>(0xE0 | (cp >> 12));
          back += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
          back += static_cast<char>(0x80 | (cp & 0x3F));
        }
      }
    }
    check(back == input, "printable() can be undone: no two inputs look alike");
  }
  if (!nick_problem(input)) {
    check(valid_utf8(input) && !input.empty(), "a nick is valid UTF-8");
    check(printable(input) == input || input.find('\\') != std::string_view::npos ||
              input.find('\t') != std::string_view::npos,
          "a nick needs no escape but for a backslash");
  }
  return 0;
}
